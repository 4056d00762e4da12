// The pipeline schedules a run may choose (`--schedule`); their action lists live in recipe/schedule.ts.
export type ScheduleKind = 'gpipe' | '1f1b' | 'zb1';

export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['gpipe', '1f1b', 'zb1'];

export function isScheduleKind(s: string): s is ScheduleKind {
  return (SCHEDULE_KINDS as readonly string[]).includes(s);
}
