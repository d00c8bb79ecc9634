// The NetDevice a vhost-user back-end serves. Behind vhost-user the
// front-end (QEMU) runs the control queue and the device's config space, and
// the back-end serves the data queues only; so the device is built without a
// control queue (MQ offered without CTRL_VQ), and without GUEST_ANNOUNCE,
// which needs the config space's status field and a config interrupt.
import { NetDevice, type NetDeviceOptions } from '../net/device.js';

/**
 * What configures the device: the TAP, MAC, feature switches, trace,
 * capture, transmit timer and the rest of NetDeviceOptions. Interrupts are
 * the back-end's to route, and queue pairs stay on this thread (the guest's
 * memory is mapped from the front-end's files, not a SharedArrayBuffer).
 */
export type VhostUserNetDeviceOptions = Omit<NetDeviceOptions, 'controlElsewhere' | 'interrupt' | 'workers'>;

/** A NetDevice for VhostUserBackend: control queue elsewhere, GUEST_ANNOUNCE off. */
export function vhostUserNetDevice(o: VhostUserNetDeviceOptions): NetDevice {
  return new NetDevice({ ...o, features: { ...o.features, GUEST_ANNOUNCE: false }, controlElsewhere: true });
}
