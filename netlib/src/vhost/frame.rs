// A frame to be copied: in a peer's memory (a descriptor chain after its
// virtio-net header) or in our own, its 802.1Q tag pushed or popped on the way;
// and the three copies between chains and bytes.
//! Frames and the copies that move them.

use crate::mem::GuestMemory;

use super::queue::Chain;

/// The 802.1Q tag protocol identifier, the first two bytes of a VLAN tag.
pub const TPID_8021Q: [u8; 2] = [0x81, 0x00];
/// Bytes of a VLAN tag.
pub const TAG_LEN: u32 = 4;
/// Where a tag sits in a frame: after the destination and source MACs.
const TAG_AT: u32 = 12;
/// Most bytes of header [`Frame::write_to`] writes before an edited frame.
const MAX_EDIT_HDR: usize = 32;

/// How a frame's 802.1Q tag changes on its way to one destination. The edit is made
/// during the one copy into the destination's buffers: the MACs are written, then the
/// tag (pushed), then the rest of the frame from after the MACs (or after the popped
/// tag); the frame is never copied twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagEdit {
    /// Copied as it is.
    #[default]
    Keep,
    /// A tag with this TCI (the VLAN id in its low 12 bits) is inserted after the MACs.
    Push(u16),
    /// The tag after the MACs is removed.
    Pop,
}

impl TagEdit {
    /// The length of a `len`-byte frame after the edit.
    #[inline]
    pub fn len_after(self, len: u32) -> u32 {
        match self {
            TagEdit::Keep => len,
            TagEdit::Push(_) => len + TAG_LEN,
            TagEdit::Pop => len.saturating_sub(TAG_LEN),
        }
    }
}

/// One frame, wherever it lies: the unit every port kind hands to the switch and
/// every destination copies from.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// A descriptor chain in a peer's memory; its first `skip` bytes (the virtio-net
    /// header) are not part of the frame.
    Guest {
        /// The memory the chain's spans are in.
        mem: &'a GuestMemory,
        /// The chain.
        chain: &'a Chain,
        /// Bytes of header before the frame.
        skip: u32,
    },
    /// Bytes in our own memory.
    Local(&'a [u8]),
    /// Frame `i` of `frames`, its tag edited as it is copied (see [`Frames::edited`]).
    Edited {
        /// The burst it is in.
        frames: &'a Frames<'a>,
        /// Its position there.
        i: usize,
        /// How its tag changes.
        edit: TagEdit,
    },
}

impl<'a> Frame<'a> {
    /// The frame's length in bytes (0 for a chain shorter than its header).
    #[inline]
    pub fn len(&self) -> u32 {
        match self {
            Frame::Guest { chain, skip, .. } => chain.total.saturating_sub(*skip),
            Frame::Local(b) => b.len() as u32,
            Frame::Edited { frames, i, edit } => edit.len_after(frames.get(*i).len()),
        }
    }

    /// Whether the frame has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the frame's first `dst.len()` bytes into `dst`; returns how many were
    /// copied (fewer when the frame is shorter, or a span could not be read).
    #[inline]
    pub fn read_head(&self, dst: &mut [u8]) -> usize {
        self.read_at(0, dst)
    }

    /// Copies the frame's bytes from `off` on into `dst` (as many as fit); returns how many
    /// were copied.
    #[inline]
    fn read_at(&self, off: u32, dst: &mut [u8]) -> usize {
        match self {
            Frame::Guest { mem, chain, skip } => read_chain(mem, chain, skip.saturating_add(off), dst).0,
            Frame::Local(b) => {
                let b = b.get(off as usize..).unwrap_or_default();
                let n = b.len().min(dst.len());
                dst[..n].copy_from_slice(&b[..n]);
                n
            }
            Frame::Edited { .. } => {
                let Some((head, n, rest)) = self.edited_head() else { return 0 };
                let (head, off) = (&head[..n], off as usize);
                let from_head = head.get(off..).unwrap_or_default();
                let k = from_head.len().min(dst.len());
                dst[..k].copy_from_slice(&from_head[..k]);
                if k == dst.len() {
                    return k;
                }
                let (plain, past) = (self.plain(), (off.saturating_sub(n)) as u32);
                k + plain.read_at(rest.saturating_add(past), &mut dst[k..])
            }
        }
    }

    /// Copies the whole frame into `dst` (which must be exactly [`Self::len`] bytes);
    /// false if a span could not be read.
    #[inline]
    pub fn read_all(&self, dst: &mut [u8]) -> bool {
        match self {
            Frame::Guest { mem, chain, skip } => read_chain(mem, chain, *skip, dst).1,
            Frame::Local(b) => {
                if b.len() != dst.len() {
                    return false;
                }
                dst.copy_from_slice(b);
                true
            }
            Frame::Edited { .. } => {
                let Some((head, n, rest)) = self.edited_head() else { return false };
                if dst.len() != self.len() as usize || dst.len() < n {
                    return false;
                }
                let (to_head, to_rest) = dst.split_at_mut(n);
                to_head.copy_from_slice(&head[..n]);
                self.plain().read_at(rest, to_rest) == to_rest.len()
            }
        }
    }

    /// Writes `hdr` then the frame into the chain `dst` of `dst_mem`; returns the
    /// bytes written, or `None` if `dst` is too small (or a span could not be used).
    #[inline]
    pub fn write_to(&self, dst_mem: &GuestMemory, dst: &Chain, hdr: &[u8]) -> Option<u32> {
        match self {
            Frame::Guest { mem, chain, skip } => copy_chain(dst_mem, dst, hdr, mem, chain, *skip),
            Frame::Local(b) => write_chain(dst_mem, dst, hdr, b),
            Frame::Edited { .. } => {
                // `hdr`, the MACs and a pushed tag go first, as one header; then the rest of
                // the frame, copied once from where it lies.
                let (head, n, rest) = self.edited_head()?;
                let mut pre = [0u8; MAX_EDIT_HDR];
                let pre_len = hdr.len() + n;
                pre.get_mut(..hdr.len())?.copy_from_slice(hdr);
                pre.get_mut(hdr.len()..pre_len)?.copy_from_slice(&head[..n]);
                match self.plain() {
                    Frame::Guest { mem, chain, skip } => {
                        copy_chain(dst_mem, dst, &pre[..pre_len], mem, chain, skip.checked_add(rest)?)
                    }
                    Frame::Local(b) => write_chain(dst_mem, dst, &pre[..pre_len], b.get(rest as usize..)?),
                    Frame::Edited { .. } => None,
                }
            }
        }
    }

    /// The frame an [`Frame::Edited`] is made from (itself for the others).
    #[inline]
    fn plain(&self) -> Frame<'a> {
        match *self {
            Frame::Edited { frames, i, .. } => frames.get(i),
            f => f,
        }
    }

    /// An edited frame's first bytes, which are not where its source has them: its MACs,
    /// and the tag pushed. Returns them, how many there are, and where in the source frame
    /// the rest of the frame starts. `None`: the source is too short (or is itself edited).
    #[inline]
    fn edited_head(&self) -> Option<([u8; 16], usize, u32)> {
        let Frame::Edited { edit, .. } = *self else { return Some(([0; 16], 0, 0)) };
        let plain = self.plain();
        if matches!(plain, Frame::Edited { .. }) {
            return None;
        }
        let mut head = [0u8; 16];
        if plain.read_at(0, &mut head[..TAG_AT as usize]) < TAG_AT as usize {
            return None;
        }
        match edit {
            TagEdit::Keep => Some((head, TAG_AT as usize, TAG_AT)),
            TagEdit::Push(tci) => {
                head[12..14].copy_from_slice(&TPID_8021Q);
                head[14..16].copy_from_slice(&tci.to_be_bytes());
                Some((head, 16, TAG_AT))
            }
            TagEdit::Pop => (plain.len() >= TAG_AT + TAG_LEN).then_some((head, TAG_AT as usize, TAG_AT + TAG_LEN)),
        }
    }
}

/// A frame buffer of our own: the first `len` bytes of `buf` are the frame.
#[derive(Debug, Clone)]
pub struct FrameBuf {
    buf: Box<[u8]>,
    len: u32,
}

impl FrameBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: vec![0; capacity].into_boxed_slice(), len: 0 }
    }

    /// The frame.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The whole buffer, to fill (then say how much with [`Self::set_len`]).
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Room in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Sets the frame's length (at most the capacity).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len()) as u32;
    }

    /// Copies `frame` in; false if it does not fit.
    pub fn fill_from(&mut self, frame: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(..frame.len()) else { return false };
        dst.copy_from_slice(frame);
        self.len = frame.len() as u32;
        true
    }
}

/// A burst of frames from one port: what the switch hands each destination.
#[derive(Debug, Clone, Copy)]
pub enum Frames<'a> {
    /// Chains in a peer's memory, each after a `skip`-byte header.
    Guest {
        /// Their memory.
        mem: &'a GuestMemory,
        /// The chains.
        chains: &'a [Chain],
        /// Header bytes before each frame.
        skip: u32,
    },
    /// Frames in buffers of our own.
    Local(&'a [FrameBuf]),
    /// Frames at (offset, length) in one buffer of our own (e.g. an AF_XDP UMEM).
    Spans {
        /// The buffer.
        base: &'a [u8],
        /// Where each frame is in it.
        spans: &'a [(u32, u32)],
    },
    /// The frames of another burst, each with its 802.1Q tag edited as it is copied.
    Edited {
        /// The burst.
        frames: &'a Frames<'a>,
        /// How every frame's tag changes.
        edit: TagEdit,
    },
}

impl<'a> Frames<'a> {
    /// No frames.
    pub const EMPTY: Frames<'static> = Frames::Local(&[]);

    /// Number of frames.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Frames::Guest { chains, .. } => chains.len(),
            Frames::Local(f) => f.len(),
            Frames::Spans { spans, .. } => spans.len(),
            Frames::Edited { frames, .. } => frames.len(),
        }
    }

    /// These frames with their tags edited by `edit` as a destination copies them
    /// (`Keep`: the frames as they are, with nothing in the way).
    #[inline]
    #[must_use]
    pub fn edited(&'a self, edit: TagEdit) -> Frames<'a> {
        match edit {
            TagEdit::Keep => *self,
            edit => Frames::Edited { frames: self, edit },
        }
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frame `i` (panics past [`Self::len`], like a slice).
    #[inline]
    pub fn get(&self, i: usize) -> Frame<'a> {
        match *self {
            Frames::Guest { mem, chains, skip } => Frame::Guest { mem, chain: &chains[i], skip },
            Frames::Local(f) => Frame::Local(f[i].as_slice()),
            Frames::Spans { base, spans } => {
                let (off, len) = spans[i];
                // A span outside the buffer reads as an empty frame (its owner checked it).
                Frame::Local(base.get(off as usize..off as usize + len as usize).unwrap_or_default())
            }
            Frames::Edited { frames, edit } => Frame::Edited { frames, i, edit },
        }
    }
}

/// Copies bytes out of a chain, skipping `skip` leading bytes (the net header),
/// into `dst`. Returns the bytes copied (the chain's length after `skip`,
/// at most `dst.len()`), and whether all of it fit.
#[inline]
pub fn read_chain(mem: &GuestMemory, c: &Chain, mut skip: u32, dst: &mut [u8]) -> (usize, bool) {
    let want = (c.total.saturating_sub(skip) as usize).min(dst.len());
    let mut done = 0usize;
    for &s in c.segs() {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        let n = ((s.len() - skip) as usize).min(dst.len() - done);
        if !mem.read(s, skip, &mut dst[done..done + n]) {
            return (done, false);
        }
        done += n;
        skip = 0;
        if done == dst.len() {
            break;
        }
    }
    (done, done >= want)
}

/// Writes `hdr` then `data` into a chain. Returns bytes written, or `None` if
/// the chain is too small.
#[inline]
pub fn write_chain(mem: &GuestMemory, c: &Chain, hdr: &[u8], data: &[u8]) -> Option<u32> {
    let total = hdr.len() + data.len();
    if (c.total as usize) < total {
        return None;
    }
    let first = c.segs().first()?;
    if first.len() as usize >= total {
        // The common case: one buffer holds header and data.
        mem.write_unless_equal(*first, 0, hdr).then_some(())?;
        mem.write(*first, hdr.len() as u32, data).then_some(())?;
        return Some(total as u32);
    }
    let mut seg = 0usize;
    let mut off = 0u32;
    for part in [hdr, data] {
        let mut p = part;
        while !p.is_empty() {
            let s = *c.segs().get(seg)?;
            let n = ((s.len() - off) as usize).min(p.len());
            mem.write(s, off, &p[..n]).then_some(())?;
            p = &p[n..];
            off += n as u32;
            if off == s.len() {
                seg += 1;
                off = 0;
            }
        }
    }
    Some(total as u32)
}

/// Copies a packet from a chain of `src_mem` (skipping its `skip`-byte header)
/// into a chain of `dst_mem` after writing `hdr`: the switch's single copy.
/// Returns bytes written into `dst`, or `None` if `dst` is too small.
#[inline]
pub fn copy_chain(
    dst_mem: &GuestMemory,
    dst: &Chain,
    hdr: &[u8],
    src_mem: &GuestMemory,
    src: &Chain,
    skip: u32,
) -> Option<u32> {
    let data_len = src.total.checked_sub(skip)?;
    let total = hdr.len() as u32 + data_len;
    if dst.total < total {
        return None;
    }
    let d0 = *dst.segs().first()?;
    let s0 = *src.segs().first()?;
    if dst.nsegs == 1 && s0.len() >= src.total {
        // Common case: both sides one buffer.
        dst_mem.write_unless_equal(d0, 0, hdr).then_some(())?;
        dst_mem.copy_from(d0, hdr.len() as u32, src_mem, s0, skip, data_len).then_some(())?;
        return Some(total);
    }
    // General case: header first, then segment by segment.
    if !hdr.is_empty() {
        write_chain(dst_mem, &Chain { total: hdr.len() as u32, ..*dst }, hdr, &[])?;
    }
    let (mut di, mut doff) = (0usize, 0u32);
    let mut hdr_left = hdr.len() as u32;
    while hdr_left > 0 {
        let s = *dst.segs().get(di)?;
        let n = (s.len() - doff).min(hdr_left);
        hdr_left -= n;
        doff += n;
        if doff == s.len() {
            di += 1;
            doff = 0;
        }
    }
    let mut skip_left = skip;
    for &s in src.segs() {
        let mut soff = 0u32;
        if skip_left >= s.len() {
            skip_left -= s.len();
            continue;
        }
        soff += skip_left;
        skip_left = 0;
        while soff < s.len() {
            let d = *dst.segs().get(di)?;
            let n = (s.len() - soff).min(d.len() - doff);
            dst_mem.copy_from(d, doff, src_mem, s, soff, n).then_some(())?;
            soff += n;
            doff += n;
            if doff == d.len() {
                di += 1;
                doff = 0;
            }
        }
    }
    Some(total)
}
