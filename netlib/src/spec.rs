// Constants from the virtio 1.x and vhost-user specifications that both the
// frontend and the backend use.
//! Virtio and vhost-user constants.

/// Feature bit: device is virtio 1.0+.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the device uses buffers in the order the driver made them available,
/// so a driver knows which buffers came back from the used index alone.
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
/// Feature bit: the packed virtqueue layout (virtio 1.1, §2.8): one descriptor ring
/// that both sides write, availability and use told by wrap-counter flag bits.
pub const VIRTIO_F_RING_PACKED: u64 = 1 << 34;
/// Feature bit (virtio-net): the device reports the largest MTU the driver should use.
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
/// Feature bit (virtio-net): the driver merges receive buffers: a frame may span several
/// receive chains, the first header's `num_buffers` saying how many.
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// Feature bit (virtio-net): several queue pairs (multiqueue); the driver says how many
/// it uses on its control queue (the frontend turns that into SET_VRING_ENABLE).
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;
/// Feature bit: the driver may put a chain in an indirect table (a descriptor with
/// VRING_DESC_F_INDIRECT pointing to an array of descriptors in its memory).
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: vhost-user protocol features are supported.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Protocol feature: MQ (the backend has several queue pairs; GET_QUEUE_NUM says how many).
pub const PROTOCOL_F_MQ: u64 = 1 << 0;
/// Protocol feature: REPLY_ACK.
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;
/// Protocol feature: NET_MTU (the frontend may send VHOST_USER_NET_SET_MTU).
pub const PROTOCOL_F_NET_MTU: u64 = 1 << 4;
/// Protocol feature: CONFIGURE_MEM_SLOTS (ADD_MEM_REG/REM_MEM_REG).
pub const PROTOCOL_F_CONFIGURE_MEM_SLOTS: u64 = 1 << 15;

/// Descriptor flag: continues via `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: device writes (else reads).
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: indirect table.
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// Avail flag: driver wants no interrupts.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used flag: device wants no kicks.
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// Packed descriptor flag: available when it equals the driver's wrap counter.
pub const VRING_PACKED_DESC_F_AVAIL: u16 = 1 << 7;
/// Packed descriptor flag: used when it equals the device's wrap counter.
pub const VRING_PACKED_DESC_F_USED: u16 = 1 << 15;
/// Packed event suppression: notifications wanted.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Packed event suppression: no notifications wanted.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Bit of a packed ring's SET/GET_VRING_BASE value holding the wrap counter (the
/// index is in the bits below it).
pub const PACKED_BASE_WRAP: u32 = 1 << 15;

/// Bytes of the virtio-net header with VERSION_1 (num_buffers included).
pub const NET_HDR_LEN: u32 = 12;
/// Where `num_buffers` (little-endian u16) sits in the virtio-net header.
pub const NUM_BUFFERS_AT: usize = 10;
/// Largest ring the virtio spec allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;
