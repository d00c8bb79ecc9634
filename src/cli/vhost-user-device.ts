// The NetDevice a vhost-user back-end serves, for either kind of front-end.
// QEMU runs the control queue and the config space itself and passes the
// data rings only; a whole-device front-end (UML's virtio_uml) passes every
// ring and reads the config space from the back-end. The device offers
// CTRL_VQ and its friends always (QEMU keeps them out of what it passes on),
// and runs the control queue iff the front-end acks CTRL_VQ; without it the
// pairs in use follow the rings the front-end enables. GUEST_ANNOUNCE is
// offered too: QEMU announces for its guest itself, and behind a
// whole-device front-end the device delivers it (config status and a
// BACKEND_CONFIG_CHANGE_MSG; the ack comes on its control queue).
import { NetDevice, type NetDeviceOptions } from '../net/device.js';

/**
 * What configures the device: the TAP, MAC, MTU, feature switches, rate
 * limits, trace, capture, transmit timer, link following and the rest of
 * NetDeviceOptions. Interrupts are the back-end's to route, and queue pairs
 * stay on this thread (the guest's memory is mapped from the front-end's
 * files, not a SharedArrayBuffer).
 */
export type VhostUserNetDeviceOptions = Omit<NetDeviceOptions, 'controlElsewhere' | 'controlIfNegotiated' | 'interrupt' | 'workers'>;

/**
 * A NetDevice for VhostUserBackend: the control queue the device's iff the
 * front-end acks CTRL_VQ; the link follows a kernel TAP's host side unless
 * followTapLink says otherwise (a socket-pair stand-in has no such side).
 */
export function vhostUserNetDevice(o: VhostUserNetDeviceOptions): NetDevice {
  return new NetDevice({ ...o, controlIfNegotiated: true, followTapLink: o.followTapLink ?? !o.tap.isSocketPair });
}
