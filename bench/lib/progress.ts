// What the bench is doing and for how long: one line rewritten in place on a
// terminal, plain lines with the elapsed time otherwise (CI logs).
export class Progress {
  private readonly t0 = performance.now();
  private readonly tty = process.stderr.isTTY === true;
  private label = '';
  private live = false;

  constructor(private readonly total: number) {}

  private elapsed(): string {
    const s = Math.floor((performance.now() - this.t0) / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }

  suite(index: number, name: string): void {
    this.label = `${index + 1}/${this.total} ${name}`;
    this.step('starting');
  }

  step(message: string): void {
    const line = `[${this.label} ${this.elapsed()}] ${message}`;
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${line}`);
      this.live = true;
    } else {
      process.stderr.write(`${line}\n`);
    }
  }

  /** Ends the live line before other output. */
  clear(): void {
    if (this.live) process.stderr.write('\r\x1b[K');
    this.live = false;
  }
}
