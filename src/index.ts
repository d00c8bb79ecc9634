// virtio-tap: a userspace virtio-net device over a Linux TAP.
export { Tap, TapQueue, TapPeer, TunOffload, TUN_OFFLOAD_ALL, offloadNames } from './tap/tap.js';
export type { TapOptions, OffloadResult } from './tap/tap.js';
export { TapError } from './tap/errors.js';
export { Link, MemoryLink } from './tap/link.js';
export type { LinkOps } from './tap/link.js';
export { HostError } from './host/errors.js';
export { parseMac, formatMac, randomMac, parseIpv4, formatIpv4, parseCidr } from './util/addr.js';

// Virtio core (device side): guest memory, both ring layouts, chains, the device core.
export * from './virtio/constants.js';
export { GuestMemory, GuestMemoryError, checkedAdd, MAX_GUEST_ADDRESS } from './virtio/guest-memory.js';
export type { MemoryRegion, RegionSpec } from './virtio/guest-memory.js';
export { DescriptorChain, ChainFault, Pop, chainFaultName, chainFaultTier } from './virtio/descriptor-chain.js';
export { QueueConfigError } from './virtio/queue.js';
export type { DeviceQueue, QueueAddresses, QueueFeatures, QueueStats } from './virtio/queue.js';
export type { DeviceRing } from './virtio/device-ring.js';
export { SplitQueue, needEvent } from './virtio/split-queue.js';
export { PackedQueue, packedNeedEvent } from './virtio/packed-queue.js';
export { VirtioDeviceCore } from './virtio/device.js';
export type { InterruptKind, DeviceCoreOptions, DeviceCoreStats } from './virtio/device.js';
export { SnapshotError } from './virtio/snapshot-fields.js';
export type { SnapshotErrorCode } from './virtio/snapshot-fields.js';
export type { CoreSnapshot, QueueSnapshot } from './virtio/queue-snapshot.js';

// The guest side in TypeScript.
export { SplitDriver } from './driver/split-driver.js';
export { PackedDriver } from './driver/packed-driver.js';
export { DriverError } from './driver/driver-queue.js';
export type { DriverQueue, DriverQueueOptions, DriverStats } from './driver/driver-queue.js';
export type { DriverRing } from './driver/driver-ring.js';
export { GuestAllocator, splitLayout, packedLayout } from './driver/layout.js';
export { makeQueueRig } from './driver/rig.js';
export type { QueueRig, QueueRigOptions, RingLayout } from './driver/rig.js';

// The virtio-net device and its TypeScript guest driver.
export { NetDevice } from './net/device.js';
export type { NetDeviceOptions, NetRestoreOptions } from './net/device.js';
export { NET_SNAPSHOT_FORMAT, NET_SNAPSHOT_VERSION } from './net/snapshot.js';
export type { NetSnapshot, PairSnapshot } from './net/snapshot.js';
export { NET_FEATURES, featureMask, featureNames } from './net/features.js';
export type { NetFeatureName, NetFeatureSwitches } from './net/features.js';
export { NetMetrics, DROP_REASONS } from './net/metrics.js';
export type { DropReason } from './net/metrics.js';
export { RxFilter } from './net/filter.js';
export type { FilterState } from './net/filter.js';
export type { NetConfig } from './net/config.js';
export type { RateLimit, BucketConfig } from './net/rate-limiter.js';
export { readNetHeader, writeNetHeader } from './net/net-header.js';
export type { NetHeader } from './net/net-header.js';
export * as net from './net/constants.js';
export { NetDriver, NetDriverError } from './driver/net-driver.js';
export type { NetDriverOptions, ReceivedFrame, VirtioDeviceHandle } from './driver/net-driver.js';

// Transports.
export { MmioTransport, MMIO, MMIO_MAGIC, VIRTIO_ID_NET, VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_CONFIG } from './transport/mmio.js';
export type { MmioOptions, MmioDevice } from './transport/mmio.js';
export { MMIO_SNAPSHOT_FORMAT, MMIO_SNAPSHOT_VERSION } from './transport/mmio-snapshot.js';
export type { MmioSnapshot, MmioQueueRegs } from './transport/mmio-snapshot.js';
export { MmioDeviceHandle } from './driver/mmio-handle.js';
export type { MmioBus } from './driver/mmio-handle.js';
export { PciTransport, pciLayout, PCI_VENDOR_ID_REDHAT_QUMRANET, VIRTIO_PCI_DEVICE_ID_BASE } from './transport/pci.js';
export type { PciOptions, PciDevice, PciLayout, PciRegion, PciStats } from './transport/pci.js';
export { COMMON as PCI_COMMON, VIRTIO_MSI_NO_VECTOR } from './transport/pci-common.js';
export { PciConfigSpace, PciConfigError } from './transport/pci-config.js';
export type { BarSpec } from './transport/pci-config.js';
export { PciDeviceHandle } from './driver/pci-handle.js';
export type { PciBus, PciHandleOptions } from './driver/pci-handle.js';
export { VhostUserBackend } from './transport/vhost-user/backend.js';
export type { VhostUserBackendOptions } from './transport/vhost-user/backend.js';
export type { BackendChannelStats } from './transport/vhost-user/backend-channel.js';
export type { VhostUserDevice } from './transport/vhost-user/device.js';
export { vhostUserNetDevice } from './cli/vhost-user-device.js';
export type { VhostUserNetDeviceOptions } from './cli/vhost-user-device.js';
export { VhostUserError } from './transport/vhost-user/protocol.js';

// v86 (optional dependency v86@0.5.462, loaded on first use): the device on a v86 PC's PCI bus.
export { V86Machine } from './v86/machine.js';
export type { V86MachineOptions } from './v86/machine.js';
export { V86GuestRam } from './v86/guest-ram.js';
export { attachPci } from './v86/pci-attach.js';
export { SerialConsole } from './v86/console.js';
export { loadV86, V86Error } from './v86/v86-api.js';
export { bootV86Guest, pingFromGuest, fetchFromHost, sendToHost } from './v86/session.js';

// Seeing inside: trace events, pcapng capture.
export { Tracer, traceToJson } from './trace/trace.js';
export type { TraceEvent, TraceEventBody, TraceListener, TraceDescriptor } from './trace/trace.js';
export { traceToText, traceSection, statusNames, descFlagNames } from './trace/format.js';
export { PcapWriter, CaptureError, describeNetHeader } from './net/pcap.js';

// Types the exports above name in their signatures.
export type { CheckedTransfer, V86Guest, V86GuestOptions } from './v86/session.js';
export type { CommandResult } from './v86/console.js';
export type { GuestRamStats } from './v86/guest-ram.js';
export type { PciAttachOptions } from './v86/pci-attach.js';
export type { V86Constructor, V86Cpu, V86Emulator, V86Io, V86IoPort, V86Pci } from './v86/v86-api.js';
export type { ConfigHook, PciIdentity } from './transport/pci-config.js';
export type { PciCommonStats } from './transport/pci-common.js';
export type { ControlMode } from './net/device-options.js';
export { COUNTERS } from './net/metrics.js';
export type { CounterName } from './net/metrics.js';
export type { LimiterLevels } from './net/rate-limiter.js';
export type { RingPositions } from './virtio/queue.js';
export type { SocketAccess } from './transport/vhost-user/connection.js';
export type { VhostUserStats } from './transport/vhost-user/rings.js';
export { Msix } from './transport/pci-msix.js';
export type { MsixPlacement } from './transport/pci-msix.js';
