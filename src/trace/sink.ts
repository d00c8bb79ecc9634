// Trace output for the command line: readable lines or JSON lines, written
// to a file or stderr in batches, synchronously, so nothing is lost at exit.
import { closeSync, openSync, writeSync } from 'node:fs';

import { traceToText } from './format.js';
import { Tracer, traceToJson, type TraceEvent } from './trace.js';

export type TraceFormat = 'text' | 'json';

export class TraceSink {
  readonly tracer = new Tracer();
  private readonly fd: number;
  private readonly ownsFd: boolean;
  private lines: string[] = [];
  private scheduled = false;
  private readonly format: (e: TraceEvent) => string;

  /** `path` undefined: stderr. */
  constructor(format: TraceFormat, path?: string) {
    this.fd = path === undefined ? 2 : openSync(path, 'w');
    this.ownsFd = path !== undefined;
    this.format = format === 'json' ? traceToJson : traceToText;
    this.tracer.subscribe((e) => this.line(this.format(e)));
  }

  private line(l: string): void {
    this.lines.push(l);
    if (this.lines.length >= 512) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
  }

  flush(): void {
    if (this.lines.length === 0) return;
    const text = `${this.lines.join('\n')}\n`;
    this.lines = [];
    writeSync(this.fd, text);
  }

  close(): void {
    this.flush();
    if (this.ownsFd) closeSync(this.fd);
  }
}
