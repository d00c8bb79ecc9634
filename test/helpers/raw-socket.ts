// Raw Ethernet frames on the host side of a TAP, through an AF_PACKET socket:
// frames the host kernel would never send (to a foreign unicast MAC, 802.1Q
// tagged without an 802.1Q module), and a capture of everything crossing the
// TAP either way. Node has no packet sockets, so a short python3 program
// (the standard library's socket module) holds the socket.
import { spawn, spawnSync } from 'node:child_process';

// Sends each hex-encoded frame of argv[2:] on interface argv[1].
const SEND = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for h in sys.argv[2:]:
    s.send(bytes.fromhex(h))
`;

// Prints "READY", then one line per frame on interface argv[1]: the packet
// type (4: sent by this host, i.e. to the guest) and the frame in hex. The
// kernel takes an 802.1Q tag off a frame it receives before a packet socket
// sees it, and tells the tag in PACKET_AUXDATA: it is put back in place.
// Ends when stdin closes or after argv[2] seconds, whichever is first.
const CAPTURE = `
import select, socket, struct, sys, time
SOL_PACKET, PACKET_AUXDATA, VLAN_VALID, TPID_VALID = 263, 8, 0x10, 0x40
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((sys.argv[1], 0))
print("READY", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    r, _, _ = select.select([s, sys.stdin], [], [], 0.2)
    if sys.stdin in r and sys.stdin.read(1) == "":
        break
    if s in r:
        data, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(20))
        for level, kind, aux in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(aux) >= 20:
                status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", aux[:20])
                if status & VLAN_VALID:
                    tag = struct.pack("!HH", tpid if status & TPID_VALID else 0x8100, tci)
                    data = data[:12] + tag + data[12:]
        print(addr[2], data.hex(), flush=True)
`;

/** python3 is there to run, or why not. */
export function rawSocketMissing(): string | null {
  const r = spawnSync('python3', ['-c', 'import socket; socket.AF_PACKET'], { encoding: 'utf8' });
  return r.status === 0 ? null : 'needs python3 (its socket module drives the raw AF_PACKET socket)';
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Sends frames (Ethernet header first, no virtio header) out of `ifname` towards the guest. */
export function sendFrames(ifname: string, frames: Uint8Array[]): void {
  const r = spawnSync('python3', ['-c', SEND, ifname, ...frames.map(hex)], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`raw send on ${ifname} failed: ${r.stderr || r.error?.message}`);
}

export interface CapturedFrame {
  /** True for a frame the host sent (towards the guest), false for one from the guest. */
  toGuest: boolean;
  frame: Uint8Array;
}

export interface RawCapture {
  /** Frames seen so far. */
  readonly frames: CapturedFrame[];
  /** Ends the capture; resolves with every frame seen. */
  stop(): Promise<CapturedFrame[]>;
}

/** Captures every frame crossing `ifname` until stop() (at most `maxSeconds`). Resolves once the socket is bound. */
export function rawCapture(ifname: string, maxSeconds = 60): Promise<RawCapture> {
  const p = spawn('python3', ['-c', CAPTURE, ifname, String(maxSeconds)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const frames: CapturedFrame[] = [];
  let rest = '';
  let err = '';
  const exited = new Promise<void>((res) => p.once('exit', () => res()));
  return new Promise((resolve, reject) => {
    let ready = false;
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdout.on('data', (d: Buffer) => {
      rest += d.toString();
      const lines = rest.split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        if (line === 'READY') {
          ready = true;
          resolve({
            frames,
            async stop() {
              p.stdin.end();
              const t = setTimeout(() => p.kill('SIGKILL'), 2000);
              await exited;
              clearTimeout(t);
              return frames;
            },
          });
          continue;
        }
        const [type, data] = line.split(' ');
        if (data !== undefined) frames.push({ toGuest: type === '4', frame: Uint8Array.from(Buffer.from(data, 'hex')) });
      }
    });
    void exited.then(() => {
      if (!ready) reject(new Error(`raw capture on ${ifname} did not start: ${err}`));
    });
  });
}

/** An Ethernet frame: destination, source, EtherType (or 0x8100 with `vid`), then payload padded to 60 bytes. */
export function ethFrame(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array, vid?: number): Uint8Array {
  const head = vid === undefined ? 14 : 18;
  const f = new Uint8Array(Math.max(60, head + payload.length));
  f.set(dst, 0);
  f.set(src, 6);
  const dv = new DataView(f.buffer);
  if (vid !== undefined) {
    dv.setUint16(12, 0x8100);
    dv.setUint16(14, vid & 0x0fff);
  }
  dv.setUint16(head - 2, type);
  f.set(payload, head);
  return f;
}
