// Runs inside report.html (after the inlined Chart.js): draws every chart from the embedded JSON, the
// vertical marks (stage starts, early stops) through a small plugin, and span names in the timeline's
// tooltips. window.propipeReport tells a test how many charts were drawn.
(function () {
  const data = JSON.parse(document.getElementById('propipe-data').textContent);
  Chart.register({
    id: 'propipeMarks',
    afterDatasetsDraw(chart, _args, opts) {
      const { ctx, chartArea, scales } = chart;
      ctx.save();
      (opts.marks || []).forEach((m, i) => {
        const x = scales.x.getPixelForValue(m.x);
        if (x < chartArea.left - 1 || x > chartArea.right + 1) return;
        ctx.strokeStyle = m.color;
        ctx.fillStyle = m.color;
        ctx.setLineDash(m.dash ? [4, 3] : []);
        ctx.beginPath();
        ctx.moveTo(x, chartArea.top);
        ctx.lineTo(x, chartArea.bottom);
        ctx.stroke();
        ctx.font = '11px system-ui, sans-serif';
        // Labels near the right edge go to the left of their line instead of off the chart.
        const w = ctx.measureText(m.label).width;
        ctx.fillText(m.label, x + 3 + w > chartArea.right ? x - 3 - w : x + 3, chartArea.top + 12 + (i % 4) * 13);
      });
      ctx.restore();
    },
  });
  const drawn = [];
  for (const spec of data.charts) {
    const options = spec.config.options;
    options.plugins = Object.assign({}, options.plugins, { propipeMarks: { marks: spec.marks || [] } });
    if (spec.id.startsWith('timeline')) {
      options.plugins.tooltip = { callbacks: { label: (c) => `${c.raw.name}: ${(c.raw.x[1] - c.raw.x[0]).toFixed(1)} ms` } };
    }
    drawn.push(new Chart(document.getElementById('chart-' + spec.id), spec.config));
  }
  window.propipeReport = { charts: drawn.length };
})();
