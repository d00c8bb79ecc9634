// A queue pair served in a worker thread of its own, over shared guest memory.
import { expect, it } from 'vitest';

import { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_OK } from '../src/net/constants.js';
import { parseIpv4 as ip } from '../src/util/addr.js';
import { buildUdp, parseUdp } from '../src/util/packet.js';
import { HostError } from '../src/host/errors.js';
import { sh, sleep, udpReceiver } from './helpers/host.js';
import { startNet } from './helpers/net-rig.js';
import { describePrivileged } from './helpers/privileged.js';

describePrivileged('net device: a queue pair in a worker thread', () => {
  it('pair 1 runs in a worker and carries traffic both ways; a reset stops it cleanly', async () => {
    const rig = await startNet({ subnet: 110, queues: 2, driver: { pairs: 2, shared: true }, device: { workers: [1] } });
    const sock = await udpReceiver(rig.hostIp);
    try {
      expect(rig.errors).toEqual([]);
      expect(rig.driver.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2, 0))).toBe(VIRTIO_NET_OK);
      const hostMac = await rig.resolveHost();
      for (let i = 0; i < 30; i++) {
        rig.driver.send(buildUdp({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 301, dstPort: sock.port, data: Uint8Array.of(i) }), {}, 1);
      }
      const t0 = Date.now();
      while (sock.messages.filter((m) => m.port === 301).length < 30 && Date.now() - t0 < 3000) await sleep(10);
      expect(sock.messages.filter((m) => m.port === 301).length).toBe(30);
      // Frames of many flows: those the kernel steers to queue 1 are read by the worker.
      for (let port = 0; port < 64; port++) sock.sock.send('flow', 21000 + port, rig.guestIp);
      const t1 = Date.now();
      while (rig.frames.filter((f) => (parseUdp(f.frame)?.dstPort ?? 0) >= 21000).length < 64 && Date.now() - t1 < 3000) await sleep(10);
      const flows = rig.frames.filter((f) => (parseUdp(f.frame)?.dstPort ?? 0) >= 21000);
      expect(flows.length).toBe(64);
      expect(flows.some((f) => f.pair === 1)).toBe(true);
      // The worker counted what it moved; the device reads its counters directly.
      const workerOnly = rig.dev.totalMetrics().txPackets - rig.dev.metrics.txPackets;
      expect(workerOnly).toBe(30);
      // A reset stops the worker before the rings change; its counts stay.
      rig.dev.setStatus(0);
      expect(rig.dev.metrics.txPackets).toBeGreaterThanOrEqual(31);
      rig.driver.start();
      await rig.resolveHost();
      expect(rig.errors).toEqual([]);
    } finally {
      await sock.close();
      rig.close();
    }
  });

  it('guest memory that is not shared is refused with a clear error, and the pair is served anyway', async () => {
    const rig = await startNet({ subnet: 111, queues: 2, driver: { pairs: 2 }, device: { workers: [1] } });
    try {
      expect(rig.errors.map((e) => e.message)).toEqual([
        'queue pair 1 cannot run in a worker: guest memory is not a SharedArrayBuffer; serving it on this thread',
      ]);
      expect(rig.errors[0]).toBeInstanceOf(HostError);
      expect((rig.errors[0] as HostError).code).toBe('ERR_WORKER_MEMORY_NOT_SHARED');
      expect(rig.driver.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2, 0))).toBe(VIRTIO_NET_OK);
      await rig.resolveHost();
    } finally {
      rig.close();
    }
  });

  it("a host error in the worker reaches the device's 'error' listeners as a HostError with its errno", async () => {
    const rig = await startNet({ subnet: 112, queues: 2, driver: { pairs: 2, shared: true }, device: { workers: [1] } });
    try {
      expect(rig.driver.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2, 0))).toBe(VIRTIO_NET_OK);
      const hostMac = await rig.resolveHost();
      // The interface goes; its queues' fds stay open but refuse I/O (tun: EBADFD).
      sh('ip', 'link', 'del', rig.tap.name);
      rig.driver.send(buildUdp({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 302, dstPort: 9, data: Uint8Array.of(1) }), {}, 1);
      const t0 = Date.now();
      while (!rig.errors.some((e) => e.message.startsWith('transmit on TAP queue 1')) && Date.now() - t0 < 3000) await sleep(10);
      const e = rig.errors.find((x) => x.message.startsWith('transmit on TAP queue 1'));
      expect(e).toBeInstanceOf(HostError);
      expect(e).toMatchObject({ code: 'EBADFD', errno: -77, syscall: 'writev' });
      expect(typeof (e as HostError).code).toBe('string');
    } finally {
      rig.close();
    }
  });
});
