// The guest's serial console (COM1) as something to drive: wait for text,
// run a shell command and get its output and exit status. Every wait is
// bounded by a timeout.
import type { V86Emulator } from './v86-api.js';
import { V86Error } from './v86-api.js';

const KEEP = 1 << 20; // console text kept for matching

export interface CommandResult {
  output: string;
  status: number;
}

export class SerialConsole {
  /** Everything the guest printed (the last megabyte). */
  text = '';
  /** Each chunk the guest prints, as it comes (a log, or a terminal for --shell). */
  onOutput: ((s: string) => void) | null = null;
  private readonly emulator: V86Emulator;
  private waiters: (() => void)[] = [];
  private seq = 0;

  constructor(emulator: V86Emulator) {
    this.emulator = emulator;
    emulator.add_listener('serial0-output-byte', (b: number) => {
      const c = String.fromCharCode(b);
      this.text += c;
      if (this.text.length > 2 * KEEP) this.text = this.text.slice(-KEEP);
      this.onOutput?.(c);
      if (c === '\n' || c === ' ' || c === '#') for (const w of this.waiters.splice(0)) w();
    });
  }

  send(text: string): void {
    this.emulator.serial0_send(text);
  }

  /** Resolves with the first match of `pattern` in text printed from `from` on; rejects after timeoutMs. */
  waitFor(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const look = (): boolean => {
        const m = pattern.exec(this.text.slice(from));
        if (m !== null) {
          clearTimeout(timer);
          resolve(m);
        }
        return m !== null;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== retry);
        reject(new V86Error('ERR_V86_TIMEOUT', `the guest did not print ${pattern} within ${timeoutMs} ms; its console ends:\n${this.text.slice(-600)}`));
      }, timeoutMs);
      const retry = (): void => {
        if (!look()) this.waiters.push(retry);
      };
      retry();
    });
  }

  /** Runs `command` in the guest's shell; its output (the echoed command line included) and exit status. */
  async run(command: string, timeoutMs: number): Promise<CommandResult> {
    const n = ++this.seq;
    const from = this.text.length;
    // The marker is split in the typed line, so only the echo's output matches it.
    this.send(`${command}; echo "@@VT""-RC ${n} $?"\n`);
    const m = await this.waitFor(new RegExp(`@@VT-RC ${n} (\\d+)`), timeoutMs, from);
    const output = this.text.slice(from, from + m.index);
    return { output, status: Number(m[1]) };
  }
}
