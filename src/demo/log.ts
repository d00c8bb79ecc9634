// How the demo reports: a step, what it saw, what went right, what went wrong.

export interface DemoLog {
  step(title: string): void;
  info(text: string): void;
  ok(text: string): void;
  fail(text: string): void;
}

/** A step that did not go as it should: reported with fail(), and the demo exits 1. */
export class DemoFailure extends Error {}
