export function canMakeNetns(): boolean;
export function insideNetns(): boolean;
export function runInNetns(argv: string[], options?: import('node:child_process').SpawnSyncOptions): number;
