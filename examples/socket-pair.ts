// A virtio-net device with no privileges: the TAP is Tap.socketPair()'s
// stand-in, whose other end (a TapPeer) plays the host. The guest is
// virtio-tap's own TypeScript driver. One frame goes out of the guest to the
// host and one comes back in.
//
//   node examples/socket-pair.ts     (Node 22.18+, which runs TypeScript as is;
//                                     or npx tsx examples/socket-pair.ts)
import { NetDevice, NetDriver, Tap } from 'virtio-tap';

const VNET_HDR = 12; // the virtio_net_hdr before each frame on the TAP (VIRTIO 1.2 §5.1.6)

const { tap, peers } = Tap.socketPair();
const host = peers[0]!;
let driver!: NetDriver;
const device = new NetDevice({ tap, mac: '02:00:00:00:00:02', interrupt: (kind, queue) => driver.interrupt(kind, queue) });
device.on('error', (e: Error) => console.error(e));
driver = new NetDriver(device);
driver.start();

// An Ethernet frame: broadcast, from the guest's MAC, EtherType 0x88b5 (local experimental).
function frame(text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const f = new Uint8Array(14 + payload.length);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5]);
  f.set(payload, 14);
  return f;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Guest -> host: the driver posts the frame and kicks; the device writes it to the TAP.
driver.send(frame('hello, host'));
const buf = new Uint8Array(2048);
let n = -1;
for (let i = 0; i < 500 && n < 0; i++) {
  n = host.read(buf);
  if (n < 0) await sleep(2);
}
if (n < 0) throw new Error('the host end received nothing');
console.log(`host received ${n - VNET_HDR} bytes: "${new TextDecoder().decode(buf.subarray(VNET_HDR + 14, n))}"`);

// Host -> guest: the host writes a frame (after a zeroed header); the device fills the guest's buffers.
const received = new Promise<Uint8Array>((resolve) => (driver.onFrame = ({ frame }) => resolve(frame)));
const out = frame('hello, guest');
const withHeader = new Uint8Array(VNET_HDR + out.length);
withHeader.set(out, VNET_HDR);
host.write(withHeader);
const got = await Promise.race([received, sleep(1000).then(() => null)]);
if (got === null) throw new Error('the guest received nothing');
console.log(`guest received ${got.length} bytes: "${new TextDecoder().decode(got.subarray(14))}"`);

console.log(device.metrics.toPrometheus(tap.name).split('\n').filter((l) => l.startsWith('virtio_tap_packets_total')).join('\n'));
device.close();
tap.close();
host.close();
