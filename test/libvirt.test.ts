// The libvirt workflow: a running guest that libvirt manages gets a NIC served
// by `virtio-tap vhost-user` hot-plugged (`virsh attach-interface DOMAIN
// vhostuser SOCKET --model virtio --live`), pings the host through the TAP,
// and has it taken out again (`virsh detach-device`), twice in each socket
// role: the back-end listening (libvirt's source mode='client') and QEMU
// listening (mode='server', the back-end with --client). One domain boot.
//
// libvirtd and virtlogd run by hand (test/helpers/libvirt.ts), QEMU as an
// unprivileged account (libvirt-qemu, or nobody without libvirt-daemon-system),
// which is what the back-end's --socket-owner/--socket-group/--socket-mode
// are for. Under software emulation QEMU 7.2 segfaults when the guest starts a
// hot-plugged virtio-net-pci with MSI-X (MACHINE-NOTES), hence
// `-global virtio-net-pci.vectors=0` on the domain's QEMU command line.
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

import { afterAll, beforeAll, expect, it } from 'vitest';

import { buildGuest } from './helpers/guest.js';
import { describeLibvirt, qemuAccount, startLibvirt, type Libvirt } from './helpers/libvirt.js';
import { CliBackend, until } from './helpers/uml.js';

const DOMAIN = 'vt-libvirt';
const CYCLES_PER_ROLE = 2;

function sh(...args: string[]): void {
  execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
}

function domainXml(guest: string, consoleFile: string, cycles: number): string {
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${DOMAIN}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${guest}/vmlinuz</kernel>
    <initrd>${guest}/initramfs.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 vt.hotplug=${cycles}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${consoleFile}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-global'/>
    <qemu:arg value='virtio-net-pci.vectors=0'/>
  </qemu:commandline>
</domain>
`;
}

describeLibvirt('libvirt hot-plugs a NIC served by virtio-tap vhost-user into a running guest', () => {
  let dir: string;
  let lv: Libvirt | null = null;
  let consolePath: string;
  const timings: string[] = [];
  const qemu = qemuAccount();
  const guestOutput = () => {
    try {
      return readFileSync(consolePath, 'utf8');
    } catch {
      return '';
    }
  };

  beforeAll(async () => {
    const built = buildGuest();
    dir = mkdtempSync(join(tmpdir(), 'vt-libvirt-'));
    chmodSync(dir, 0o755);
    // The guest's files where QEMU's account can read them (the cache may be under /root).
    const guest = join(dir, 'guest');
    mkdirSync(guest, { mode: 0o755 });
    for (const f of ['vmlinuz', 'initramfs.gz']) {
      copyFileSync(join(built, f), join(guest, f));
      chmodSync(join(guest, f), 0o644);
    }
    consolePath = join(guest, 'console.log');
    writeFileSync(consolePath, '');
    chownSync(consolePath, qemu.uid, qemu.gid);
    const t0 = Date.now();
    lv = await startLibvirt(join(dir, 'libvirt'), qemu);
    const t1 = Date.now();
    writeFileSync(join(dir, 'domain.xml'), domainXml(guest, consolePath, 2 * CYCLES_PER_ROLE));
    await lv.virsh(['define', join(dir, 'domain.xml')]);
    await lv.virsh(['start', DOMAIN], 120_000);
    const t2 = Date.now();
    await until(() => guestOutput().includes('VT-HOTPLUG-READY'), 90_000, `the guest to boot:\n${guestOutput()}`);
    timings.push(`libvirtd serving after ${t1 - t0} ms, virsh start ${t2 - t1} ms, the guest's init ready ${Date.now() - t2} ms later`);
  }, 200_000);

  afterAll(async () => {
    if (lv !== null) {
      await lv.virsh(['destroy', DOMAIN], 30_000).catch(() => undefined);
      await lv.virsh(['undefine', DOMAIN], 30_000).catch(() => undefined);
      // Were libvirtd unable to end it, QEMU would outlive the daemons.
      const pid = lv.qemuPid(DOMAIN);
      if (pid !== null) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await lv.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  // Plugs in a NIC on `socket` (libvirt's source mode `mode`), waits for the
  // guest's ping through it, unplugs it, waits for the guest to see it gone.
  async function cycle(n: number, socket: string, mode: 'client' | 'server', subnet: number, timings: string[]) {
    try {
      await plugPingUnplug(n, socket, mode, subnet, timings);
    } catch (e) {
      (e as Error).message += `\nQEMU's log:\n${lv!.qemuLog(DOMAIN)}\nthe guest's console:\n${guestOutput().slice(-3000)}`;
      throw e;
    }
  }

  async function plugPingUnplug(n: number, socket: string, mode: 'client' | 'server', subnet: number, timings: string[]) {
    const mac = `52:54:00:00:${subnet.toString(16).padStart(2, '0')}:02`;
    const t0 = Date.now();
    await lv!.virsh(['attach-interface', DOMAIN, 'vhostuser', socket, '--model', 'virtio', '--source-mode', mode, '--mac', mac, '--live'], 60_000);
    const t1 = Date.now();
    await until(() => /VT-HOTPLUG-PING-(OK|FAILED) \d+/.test(guestOutput().split(`VT-PLUGGED ${n} `)[1] ?? ''), 60_000, `the guest's ping through NIC ${n}:\n${guestOutput()}`);
    expect(guestOutput()).toContain(`VT-PLUGGED ${n} ${mac}`);
    expect(guestOutput(), guestOutput()).toContain(`VT-HOTPLUG-PING-OK ${n}`);
    const t2 = Date.now();
    expect(await lv!.virsh(['domiflist', DOMAIN])).toContain(mac);
    writeFileSync(join(dir, `nic-${n}.xml`), `<interface type='vhostuser'><mac address='${mac}'/><source type='unix' path='${socket}' mode='${mode}'/><model type='virtio'/></interface>\n`);
    await lv!.virsh(['detach-device', DOMAIN, join(dir, `nic-${n}.xml`), '--live'], 60_000);
    await until(() => guestOutput().includes(`VT-UNPLUGGED ${n}`), 60_000, `the guest to see NIC ${n} go:\n${guestOutput()}`);
    const end = Date.now() + 30_000;
    while ((await lv!.virsh(['domiflist', DOMAIN])).includes(mac)) {
      if (Date.now() > end) throw new Error(`libvirt still lists ${mac} after the guest let it go`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const t3 = Date.now();
    timings.push(`cycle ${n} (${mode === 'client' ? 'back-end listens' : 'QEMU listens'}): attach ${t1 - t0} ms, ping ${t2 - t1} ms, detach ${t3 - t2} ms`);
  }

  function hostSide(tap: string, subnet: number): void {
    sh('ip', 'addr', 'add', `198.18.${subnet}.1/24`, 'dev', tap);
    sh('ip', 'link', 'set', tap, 'up');
  }

  it('the back-end listens (source mode=client): its socket handed to QEMU\'s account; plug, ping, unplug, twice', async () => {
    // The back-end (root) makes the socket; QEMU (unprivileged) must be let in.
    const sockDir = join(dir, 'backend-listens');
    mkdirSync(sockDir, { mode: 0o755 });
    const socket = join(sockDir, 'vt.sock');
    const subnet = 170;
    const cli = await CliBackend.start([
      '--socket', socket, '--tap', 'vtlv0', '--mac', '52:54:00:00:aa:01',
      '--socket-owner', String(qemu.uid), '--socket-group', String(qemu.gid), '--socket-mode', '0660',
    ]);
    try {
      hostSide('vtlv0', subnet);
      for (let i = 1; i <= CYCLES_PER_ROLE; i++) await cycle(i, socket, 'client', subnet, timings);
      expect(cli.output.match(/front-end connected/g)?.length).toBe(CYCLES_PER_ROLE);
      expect(cli.output.match(/front-end gone/g)?.length).toBe(CYCLES_PER_ROLE);
    } finally {
      expect(await cli.stop()).toBe(0);
    }
    console.log(timings.join('\n'));
  }, 300_000);

  it('QEMU listens (source mode=server), the back-end connects with --client; plug, ping, unplug, twice', async () => {
    // QEMU (unprivileged) makes the socket: the directory must be its to write.
    const sockDir = join(dir, 'qemu-listens');
    mkdirSync(sockDir, { mode: 0o755 });
    chownSync(sockDir, qemu.uid, qemu.gid);
    const socket = join(sockDir, 'vt.sock');
    const subnet = 171;
    // The back-end keeps trying until QEMU listens, and again after each unplug.
    const cli = await CliBackend.start(['--socket', socket, '--tap', 'vtlv1', '--mac', '52:54:00:00:ab:01', '--client']);
    try {
      hostSide('vtlv1', subnet);
      for (let i = 1; i <= CYCLES_PER_ROLE; i++) await cycle(CYCLES_PER_ROLE + i, socket, 'server', subnet, timings);
      // At least once per plug: after an unplug QEMU may still listen for a
      // moment (libvirt removes the chardev after the device), and the
      // back-end's reconnect can land there once more.
      expect(cli.output.match(/front-end connected/g)?.length).toBeGreaterThanOrEqual(CYCLES_PER_ROLE);
    } finally {
      expect(await cli.stop()).toBe(0);
    }
    console.log(timings.join('\n'));
    await until(() => guestOutput().includes('VT-DONE'), 10_000, 'the guest to finish');
  }, 300_000);
});
