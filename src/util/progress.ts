/**
 * A one-line progress bar on a TTY (bytes, rate, ETA when the total is known). It does nothing
 * when stderr is not a TTY or when logs are JSON, so scripts and PostgreSQL's log stay clean.
 */
import { isJsonLogging, setProgressLineVisible } from './log.ts';
import { formatBytes, formatDuration } from './units.ts';

export interface Progress {
  add(bytes: number): void;
  done(): void;
}

const REDRAW_INTERVAL_MS = 200;

export function createProgress(label: string, totalBytes?: number): Progress {
  if (!process.stderr.isTTY || isJsonLogging()) return { add() {}, done() {} };
  const started = Date.now();
  let bytes = 0;
  let lastDraw = 0;

  const draw = (final: boolean): void => {
    const elapsedMs = Math.max(1, Date.now() - started);
    const rate = (bytes / elapsedMs) * 1000;
    let text = `${label} ${formatBytes(bytes)}`;
    if (totalBytes !== undefined && totalBytes > 0) {
      const fraction = Math.min(1, bytes / totalBytes);
      const width = 24;
      const filled = Math.round(fraction * width);
      text = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatBytes(bytes)}/${formatBytes(totalBytes)}`;
      if (!final && rate > 0) text += ` ETA ${formatDuration(((totalBytes - bytes) / rate) * 1000)}`;
    }
    text += ` ${formatBytes(rate)}/s`;
    process.stderr.write(`\r\x1b[2K${text}${final ? '\n' : ''}`);
    setProgressLineVisible(!final);
  };

  return {
    add(count: number) {
      bytes += count;
      const now = Date.now();
      if (now - lastDraw >= REDRAW_INTERVAL_MS) {
        lastDraw = now;
        draw(false);
      }
    },
    done() {
      draw(true);
    },
  };
}
