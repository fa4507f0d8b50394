//! The operation record that an adapter turns into an SQE.

use crate::error::{Error, Result};
use crate::key::{BufKey, ElemRef};
use crate::slots::FileSlot;

/// The most buffer slices one descriptor (and so one message) carries.
pub const MAX_SG: usize = 4;

/// What a descriptor asks the kernel to do: the operations a pool message can carry its own
/// buffer through (an adapter's `Op::from_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Opcode {
    /// Nothing: completes at once, with the message handed back (a round trip through the ring).
    #[default]
    Nop,
    /// Read from the file at `offset` into the slice (`READ_FIXED`).
    ReadFixed,
    /// Write the slice to the file at `offset` (`WRITE_FIXED`).
    WriteFixed,
    /// Send the slice on the socket.
    Send,
    /// Receive into the slice from the socket.
    Recv,
    /// Zero-copy send of the slice; its final completion is the `F_NOTIF` one.
    SendZc,
}

impl Opcode {
    /// Whether the operation reads or writes the descriptor's buffers, so that it needs at
    /// least one slice.
    pub fn needs_buffers(self) -> bool {
        !matches!(self, Opcode::Nop)
    }

    /// Whether the operation has a file offset.
    pub fn has_offset(self) -> bool {
        matches!(self, Opcode::ReadFixed | Opcode::WriteFixed)
    }
}

/// Flags on a descriptor; each one reaches the SQE the adapter builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DescFlags(pub u32);

impl DescFlags {
    /// No flags.
    pub const NONE: DescFlags = DescFlags(0);
    /// Start only after every operation submitted before it on the same ring completes
    /// (`IOSQE_IO_DRAIN`).
    pub const DRAIN: DescFlags = DescFlags(1 << 1);
    /// Go to the kernel's async workers at once rather than trying inline first
    /// (`IOSQE_ASYNC`).
    pub const ASYNC: DescFlags = DescFlags(1 << 2);
    /// `WriteFixed` only: the data is durable before the completion (`RWF_DSYNC`, the FUA of a
    /// block device).
    pub const FUA: DescFlags = DescFlags(1 << 4);
    /// Every flag an adapter knows.
    pub const ALL: DescFlags = DescFlags(Self::DRAIN.0 | Self::ASYNC.0 | Self::FUA.0);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: DescFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for DescFlags {
    type Output = DescFlags;
    fn bitor(self, rhs: DescFlags) -> DescFlags {
        DescFlags(self.0 | rhs.0)
    }
}

/// One operation, as an adapter needs it to build an SQE.
///
/// A message's descriptor starts as a `Nop` whose slices cover the message's buffers; the owner
/// fills in the rest. Descriptors that carry no buffers can also be made with
/// [`Descriptor::new`].
#[derive(Clone)]
// In this order, the owner stamp, which every acquire writes, shares the cache line of the
// element's dirty flag (see `ElemMeta`), so a clean acquire touches one line of metadata.
#[repr(C)]
pub struct Descriptor {
    owner: ElemRef,
    /// SQE and regio flags.
    pub flags: DescFlags,
    /// The fixed file the operation acts on.
    pub file: Option<FileSlot>,
    /// The file offset, for the operations that have one ([`Opcode::has_offset`]).
    pub offset: u64,
    /// The caller's cookie, returned with the completion.
    pub cookie: u64,
    sg: [BufKey; MAX_SG],
    /// The operation.
    pub opcode: Opcode,
    nsg: u8,
}

/// The bytes of a descriptor that hold its owner stamp: `ElemMeta` checks that they share a
/// cache line with the dirty flag.
pub(crate) const OWNER_BYTES: std::ops::Range<usize> = {
    let start = std::mem::offset_of!(Descriptor, owner);
    start..start + std::mem::size_of::<ElemRef>()
};

/// Equal when every field and the slices in use are equal (entries past the slices do not count).
impl PartialEq for Descriptor {
    fn eq(&self, other: &Self) -> bool {
        self.opcode == other.opcode
            && self.flags == other.flags
            && self.file == other.file
            && self.offset == other.offset
            && self.cookie == other.cookie
            && self.slices() == other.slices()
            && self.owner == other.owner
    }
}

impl Eq for Descriptor {}

impl std::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Descriptor")
            .field("opcode", &self.opcode)
            .field("flags", &self.flags)
            .field("file", &self.file)
            .field("offset", &self.offset)
            .field("cookie", &self.cookie)
            .field("slices", &self.slices())
            .field("owner", &self.owner)
            .finish()
    }
}

const EMPTY_KEY: BufKey = BufKey {
    region: crate::key::RegionId(0),
    offset: 0,
    len: 0,
};

impl Descriptor {
    /// A descriptor with no buffer slices and no owner.
    pub const fn new(opcode: Opcode) -> Descriptor {
        Descriptor {
            opcode,
            flags: DescFlags::NONE,
            file: None,
            offset: 0,
            cookie: 0,
            sg: [EMPTY_KEY; MAX_SG],
            nsg: 0,
            owner: ElemRef::NONE,
        }
    }

    /// The message this descriptor belongs to.
    pub fn owner(&self) -> ElemRef {
        self.owner
    }

    /// The buffer slices, in order.
    pub fn slices(&self) -> &[BufKey] {
        &self.sg[..usize::from(self.nsg)]
    }

    /// Replaces the slices. They are validated by
    /// [`MessagePool::validate`](crate::MessagePool::validate), and by an adapter when the
    /// message is posted (a message can only name its own buffers), not here.
    ///
    /// # Errors
    ///
    /// [`Error::TooManySlices`] if there are more than [`MAX_SG`].
    pub fn set_slices(&mut self, slices: &[BufKey]) -> Result<()> {
        if slices.len() > MAX_SG {
            return Err(Error::TooManySlices { max: MAX_SG });
        }
        self.sg[..slices.len()].copy_from_slice(slices);
        self.nsg = slices.len() as u8;
        Ok(())
    }

    /// Shortens the slices so that they cover at most `len` bytes in total: the length of a
    /// read, or of a received message.
    pub fn truncate(&mut self, len: usize) {
        let mut left = len;
        let mut keep = 0;
        for key in &mut self.sg[..usize::from(self.nsg)] {
            if left == 0 {
                break;
            }
            let take = (key.len as usize).min(left);
            key.len = take as u32;
            left -= take;
            keep += 1;
        }
        self.nsg = keep;
    }

    /// The total length of the slices.
    pub fn len(&self) -> usize {
        self.slices().iter().map(|k| k.len as usize).sum()
    }

    /// Whether the slices cover no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the owner stamp to a new generation of the same message (after a raw round trip).
    pub(crate) fn restamp(&mut self, owner: ElemRef) {
        self.owner = owner;
    }

    /// Moves the owner stamp to generation `generation`, keeping its pool and element: for a
    /// descriptor still in the state [`reset`](Self::reset) left it in.
    #[inline]
    pub(crate) fn restamp_gen(&mut self, generation: u32) {
        self.owner.generation = generation;
    }

    /// Resets the descriptor of a freshly acquired message whose buffers are `keys`. Field by
    /// field, so that the unused slices are not rewritten on the hot path.
    #[inline]
    pub(crate) fn reset(&mut self, owner: ElemRef, keys: &[BufKey]) {
        self.opcode = Opcode::Nop;
        self.flags = DescFlags::NONE;
        self.file = None;
        self.offset = 0;
        self.cookie = 0;
        self.owner = owner;
        self.sg[..keys.len()].copy_from_slice(keys);
        self.nsg = keys.len() as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RegionId;

    fn key(offset: u32, len: u32) -> BufKey {
        BufKey {
            region: RegionId(1),
            offset,
            len,
        }
    }

    #[test]
    fn truncate_shortens_across_slices() {
        let mut d = Descriptor::new(Opcode::Recv);
        d.set_slices(&[key(0, 100), key(4096, 100), key(8192, 100)])
            .unwrap();
        assert_eq!(d.len(), 300);
        d.truncate(150);
        assert_eq!(d.slices(), &[key(0, 100), key(4096, 50)]);
        d.truncate(0);
        assert!(d.is_empty());
    }

    #[test]
    fn equality_ignores_unused_slices() {
        let mut a = Descriptor::new(Opcode::Send);
        let mut b = Descriptor::new(Opcode::Send);
        a.set_slices(&[key(0, 8), key(64, 8)]).unwrap();
        b.set_slices(&[key(0, 8)]).unwrap();
        assert_ne!(a, b);
        a.truncate(8);
        assert_eq!(a, b);
        assert!(format!("{a:?}").contains("slices: [BufKey"));
    }

    #[test]
    fn too_many_slices_is_an_error() {
        let mut d = Descriptor::new(Opcode::Send);
        let keys = [key(0, 1); MAX_SG + 1];
        assert!(matches!(
            d.set_slices(&keys),
            Err(Error::TooManySlices { max: MAX_SG })
        ));
        assert!(d.set_slices(&keys[..MAX_SG]).is_ok());
    }

    #[test]
    fn flags_combine() {
        let f = DescFlags::ASYNC | DescFlags::FUA;
        assert!(f.contains(DescFlags::FUA));
        assert!(!f.contains(DescFlags::DRAIN));
        assert!(DescFlags::ALL.contains(f));
        assert!(Opcode::WriteFixed.needs_buffers());
        assert!(!Opcode::Nop.needs_buffers());
        assert!(Opcode::ReadFixed.has_offset() && !Opcode::Send.has_offset());
    }
}
