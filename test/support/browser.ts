// Opens a page in Debian's headless Chromium through puppeteer-core and reports what a person would
// see: page errors, console errors, network requests, and every Chart.js chart with its data points.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

export const CHROMIUM = process.env.PROPIPE_CHROMIUM ?? '/usr/bin/chromium';

export interface ChartSeen {
  id: string;
  type: string;
  /** Data points per dataset, as Chart.js laid them out. */
  points: number[];
  labels: string[];
  /** Pixels of the canvas that are not blank (something was drawn). */
  inked: number;
}

export interface PageSeen {
  errors: string[];
  requests: string[];
  charts: ChartSeen[];
  drawn: number;
}

export async function openInChromium(file: string, screenshot?: string): Promise<PageSeen> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) or set PROPIPE_CHROMIUM`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('pageerror', (e) => errors.push(`page error: ${(e as Error).message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warn') errors.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(`file://${path.resolve(file)}`, { waitUntil: 'load' });
    await page.waitForFunction('window.propipeReport !== undefined', { timeout: 20_000 }).catch(() => errors.push('the page never finished drawing (window.propipeReport unset)'));
    // Runs in the page (a string: this project's TypeScript has no DOM types).
    const seen = (await page.evaluate(`(() => {
      const charts = [...document.querySelectorAll('canvas')].map((canvas) => {
        const chart = Chart.getChart(canvas);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
        return {
          id: canvas.id,
          type: chart ? chart.config.type : 'none',
          points: chart ? chart.data.datasets.map((_, i) => chart.getDatasetMeta(i).data.length) : [],
          labels: chart ? chart.data.datasets.map((d) => d.label) : [],
          inked,
        };
      });
      return { charts, drawn: window.propipeReport ? window.propipeReport.charts : 0 };
    })()`)) as { charts: ChartSeen[]; drawn: number };
    if (screenshot) await page.screenshot({ path: screenshot as `${string}.png`, fullPage: true });
    return { errors, requests, ...seen };
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
