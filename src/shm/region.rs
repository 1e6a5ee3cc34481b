//! [`Region`]: a sealed memfd holding a header and two rings, mapped into
//! this process; [`OwnArena`] and [`PeerArena`], a side's arena memfd as
//! its owner and as the peer map it; and [`Endpoint`], one side's share
//! of all three.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

use crate::ring::{Consumer, Producer, RawRing};

use super::arena::Arena;
use super::desc::Desc;
use super::error::RegionError;
use super::layout::{Area, RegionHeader, RegionLayout, AREA_NAMES, HEADER_WORDS};
use super::mem::{ArenaMem, PeerMem};

/// Seals a region must carry: its size can never change, and the seals
/// themselves cannot either.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Seals an arena memfd carries: as a region's, plus no writable mapping
/// or `write` but the ones its owner made before sealing.
const ARENA_SEALS: SealFlags = REQUIRED_SEALS.union(SealFlags::FUTURE_WRITE);

/// The page size of this machine, in bytes (a power of two).
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Which side of a region an [`Endpoint`] plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Produces requests, consumes responses, owns the client arena.
    Client,
    /// Consumes requests, produces responses, owns the server arena.
    Server,
}

/// A shared-memory region backed by a sealed memfd, mapped read-write and
/// shared, its header validated and its rings set up. See the
/// [module docs](super) for the layout.
///
/// Made by [`create`](Self::create) (a fresh region) or
/// [`attach`](Self::attach) (a region received from a peer, validated);
/// used by taking one side with [`into_client`](Self::into_client) or
/// [`into_server`](Self::into_server).
pub struct Region {
    fd: OwnedFd,
    map: Arc<MmapRaw>,
    /// The validated local copy of the header; never re-read.
    header: RegionHeader,
    /// `(st_dev, st_ino)` of the memfd: identifies the region within this
    /// process (see [`Claim`]).
    key: (u64, u64),
    request: RawRing<Desc>,
    response: RawRing<Desc>,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// Creates a region with `layout`: `memfd_create` (`MFD_CLOEXEC |
    /// MFD_ALLOW_SEALING`), `ftruncate` to the size, seal with
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` (not `F_SEAL_WRITE`: both
    /// sides write), map shared, write the header and initialize both
    /// rings (empty, zeroed). Hand [`fd`](Self::fd) to the peer (see
    /// [`send_fd`](super::send_fd)).
    ///
    /// # Errors
    ///
    /// [`RegionError::Ring`] or [`RegionError::TooLarge`] for a layout
    /// that cannot be made (as [`io::Error`]); OS errors from the calls
    /// above.
    pub fn create(layout: &RegionLayout) -> io::Result<Region> {
        let page = page_size();
        let header = layout.header(page)?;
        let fd = memfd_create("green-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        ftruncate(&fd, header.size)?;
        // Sealed before mapping: from here on nobody, not even another
        // holder of the fd, can shrink it under the mapping.
        fcntl_add_seals(&fd, REQUIRED_SEALS)?;
        let key = file_key(&fd)?;
        // `header.size` fits usize: `RegionLayout::header` checked.
        let map = map_shared(&fd, header.size as usize)?;
        for (i, word) in header.to_words().into_iter().enumerate() {
            // SAFETY: the mapping is page-aligned and holds the header page
            // (`header.size >= page >= HEADER_BYTES`).
            let w = unsafe { header_word(&map, i) };
            // Relaxed: the peer gets the fd only later (sendmsg), which
            // orders these stores before its attach.
            w.store(word, Ordering::Relaxed);
        }
        debug_assert_eq!(header.validate(header.size, page), Ok(()));
        let ring = |area: Area, name: &'static str, capacity: u32| {
            // SAFETY: the area lies within the mapping and is page-aligned
            // (`RegionLayout::header` computed it); the mapping lives as
            // long as the Region and every handle made from these rings
            // (they get the mapping's Arc at `into_*`); nothing else
            // accesses the fresh area during init; afterwards this
            // process takes each side once (`Region::into_*` consumes the
            // Region, `Claim` stops a second Region of the same memfd in
            // this process from taking the same role).
            unsafe { RawRing::<Desc>::init(area_ptr(&map, area), area.len as usize, capacity) }
                .map_err(|error| RegionError::Ring { area: name, error })
        };
        let request = ring(
            header.request_ring,
            AREA_NAMES[0],
            layout.request_capacity(),
        )?;
        let response = ring(
            header.response_ring,
            AREA_NAMES[1],
            layout.response_capacity(),
        )?;
        Ok(Region {
            fd,
            map: Arc::new(map),
            header,
            key,
            request,
            response,
        })
    }

    /// Attaches to a region received from a peer (who may be hostile).
    ///
    /// Checks, in order: the fd carries `F_SEAL_SHRINK | F_SEAL_GROW |
    /// F_SEAL_SEAL` and no write seal (an unsealed file could shrink under
    /// the mapping and turn an access into `SIGBUS`); its size (`fstat`)
    /// holds a header page; then maps it and reads the header once into a
    /// local copy, validated by [`RegionHeader::validate`] (magic,
    /// version, size, page-aligned areas within the region without
    /// overlap, all in checked `u64`); then attaches both rings, which run
    /// the ring layer's own checks.
    ///
    /// # Errors
    ///
    /// A [`RegionError`] naming the failed check, as an [`io::Error`] of
    /// kind [`io::ErrorKind::InvalidData`]; OS errors from `fstat` or
    /// `mmap`. Never panics on what the region holds.
    pub fn attach(fd: OwnedFd) -> io::Result<Region> {
        let seals = fixed_size_seals(&fd)?;
        if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
            return Err(RegionError::WriteSealed {
                found: seals.bits(),
            }
            .into());
        }
        let stat = fstat(&fd)?;
        // A negative size cannot happen; treat it as "too small".
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let page = page_size();
        if size < page {
            return Err(RegionError::TooSmall { size, needed: page }.into());
        }
        let len = usize::try_from(size).map_err(|_| RegionError::TooLarge {
            what: "region size",
        })?;
        let map = map_shared(&fd, len)?;
        let mut words = [0u64; HEADER_WORDS];
        for (i, word) in words.iter_mut().enumerate() {
            // SAFETY: the mapping is page-aligned and at least a page long
            // (checked above), which holds the header.
            let w = unsafe { header_word(&map, i) };
            // Relaxed: the creator wrote the header before sending the fd,
            // and the socket hand-over orders that before this load; a
            // peer changing it later changes nothing, the copy is final.
            *word = w.load(Ordering::Relaxed);
        }
        let header = RegionHeader::from_words(words);
        header.validate(size, page)?;
        let ring = |area: Area, name: &'static str| {
            // SAFETY: validated: the area lies within the mapping, is
            // page-aligned and overlaps no other area; the mapping outlives
            // every handle made from the ring (as in `create`); this
            // process takes each side once (as in `create`). The peer may
            // do anything to the bytes: the ring layer copes.
            unsafe { RawRing::<Desc>::attach(area_ptr(&map, area), area.len as usize) }
                .map_err(|error| RegionError::Ring { area: name, error })
        };
        let request = ring(header.request_ring, AREA_NAMES[0])?;
        let response = ring(header.response_ring, AREA_NAMES[1])?;
        Ok(Region {
            key: file_key(&fd)?,
            fd,
            map: Arc::new(map),
            header,
            request,
            response,
        })
    }

    /// The memfd, to send to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The validated header (this process's copy).
    pub fn header(&self) -> &RegionHeader {
        &self.header
    }

    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        self.header.size
    }

    /// The client side: request producer, response consumer, the client
    /// arena `own` (this process made it, see [`OwnArena::create`]) and
    /// the server's arena `peer` (received, see [`PeerArena::attach`]).
    /// Closes this Region's fd (the mapping stays).
    ///
    /// # Errors
    ///
    /// [`RegionError::ArenaSizeMismatch`] (as [`io::ErrorKind::InvalidData`])
    /// if either arena is not the size the header gives;
    /// [`io::ErrorKind::AlreadyExists`] if another [`Region`] of the same
    /// memfd in this process already took the client side and its handles
    /// are alive.
    pub fn into_client(self, own: OwnArena, peer: PeerArena) -> io::Result<Endpoint> {
        self.into_endpoint(Role::Client, own, peer)
    }

    /// The server side: request consumer, response producer, the server
    /// arena `own` and the client's arena `peer`. Closes this Region's fd
    /// (the mapping stays).
    ///
    /// # Errors
    ///
    /// As [`into_client`](Self::into_client), for the server side.
    pub fn into_server(self, own: OwnArena, peer: PeerArena) -> io::Result<Endpoint> {
        self.into_endpoint(Role::Server, own, peer)
    }

    fn into_endpoint(self, role: Role, own: OwnArena, peer: PeerArena) -> io::Result<Endpoint> {
        let [(client, client_len), (server, server_len)] = self.header.arenas();
        let (own_want, peer_want) = match role {
            Role::Client => ((client, client_len), (server, server_len)),
            Role::Server => ((server, server_len), (client, client_len)),
        };
        for ((arena, header), actual) in [
            (own_want, own.mem.len() as u64),
            (peer_want, peer.mem.len() as u64),
        ] {
            if header != actual {
                return Err(RegionError::ArenaSizeMismatch {
                    arena,
                    header,
                    actual,
                }
                .into());
            }
        }
        let claim = Claim::take(self.key, role)?;
        let owner: Arc<dyn Send + Sync> = Arc::new(Owner {
            _claim: claim,
            _map: self.map.clone(),
        });
        let request = self.request.keep_alive(owner.clone());
        let response = self.response.keep_alive(owner);
        let (tx, rx) = match role {
            Role::Client => (request.into_producer(), response.into_consumer()),
            Role::Server => (response.into_producer(), request.into_consumer()),
        };
        Ok(Endpoint {
            role,
            tx,
            rx,
            arena: own.into_arena(),
            peer_arena: peer.mem,
        })
    }
}

/// This side's arena as its owner maps it: a memfd of its own, mapped
/// read-write and shared, then sealed with `F_SEAL_SHRINK | F_SEAL_GROW |
/// F_SEAL_FUTURE_WRITE | F_SEAL_SEAL`. Send [`fd`](Self::fd) to the peer,
/// who maps it read-only ([`PeerArena::attach`]).
///
/// `F_SEAL_FUTURE_WRITE` keeps the mapping made before it writable and
/// refuses every later way to write the file: a writable shared `mmap`
/// (`EPERM`), `mprotect` of a read-only mapping to writable (`EACCES`),
/// `write`/`pwrite`/`fallocate` hole punching (`EPERM`), `MADV_REMOVE`
/// (`EACCES`), for every holder of the fd, reopened ones included. So the
/// owner's mapping is the only way to change the bytes: no other process
/// can write this arena (short of `ptrace`, which can write any memory of
/// ours), and an owner that hands out a block as `&mut [u8]` knows that
/// nobody else changes it. The peer can still read every byte at any time.
pub struct OwnArena {
    fd: OwnedFd,
    mem: ArenaMem,
}

impl fmt::Debug for OwnArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnArena")
            .field("fd", &self.fd)
            .field("len", &self.mem.len())
            .finish()
    }
}

impl OwnArena {
    /// Creates an arena memfd of `len` bytes (a nonzero multiple of the
    /// page size that fits `usize`: [`RegionHeader::validate`] checked
    /// the header's), maps it and seals it.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a length that is zero, not
    /// page-aligned or too large; OS errors from `memfd_create`,
    /// `ftruncate`, `mmap` or `fcntl`.
    pub fn create(len: u64) -> io::Result<OwnArena> {
        let bytes = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && len % page_size() == 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("arena of {len} bytes: not a nonzero multiple of the page size"),
                )
            })?;
        let fd = memfd_create(
            "green-shm-arena",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        ftruncate(&fd, len)?;
        // Mapped writable before F_SEAL_FUTURE_WRITE: this mapping is then
        // the only writable one there will ever be.
        let map = Arc::new(map_shared(&fd, bytes)?);
        fcntl_add_seals(&fd, ARENA_SEALS)?;
        let base = map_base(&map);
        // SAFETY: the mapping is page-aligned, `bytes` long (a multiple of
        // the page size, so whole words), readable and writable, and lives
        // as long as the Arc handed over; in this process it is reached
        // only through ArenaMem handles (nobody else has its address).
        let mem = unsafe { ArenaMem::from_raw(base, bytes, map) };
        Ok(OwnArena { fd, mem })
    }

    /// The memfd, to send to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64
    }

    /// Whether the arena has no bytes (never true for a created one).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// The arena's allocator over its bytes, without a region (the IPC
    /// layer takes it through [`Region::into_client`] and
    /// [`Region::into_server`]). Closes the fd; the mapping stays.
    pub fn into_arena(self) -> Arena {
        Arena::new(self.mem)
    }
}

/// The peer's arena as this side maps it: read-only.
pub struct PeerArena {
    mem: PeerMem,
}

impl fmt::Debug for PeerArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerArena")
            .field("len", &self.mem.len())
            .finish()
    }
}

impl PeerArena {
    /// Maps an arena memfd received from a peer (who may be hostile),
    /// read-only, after checking it: it carries the seals
    /// [`OwnArena::create`] puts on (`F_SEAL_SHRINK | F_SEAL_GROW |
    /// F_SEAL_SEAL`, and `F_SEAL_FUTURE_WRITE` or `F_SEAL_WRITE`), and its
    /// size is `len` (the header's size for `arena`, a name for errors).
    ///
    /// # Errors
    ///
    /// A [`RegionError`] ([`NotSealable`](RegionError::NotSealable),
    /// [`Unsealed`](RegionError::Unsealed),
    /// [`ArenaWritable`](RegionError::ArenaWritable),
    /// [`ArenaSizeMismatch`](RegionError::ArenaSizeMismatch)) as an
    /// [`io::Error`] of kind [`io::ErrorKind::InvalidData`]; OS errors
    /// from `fstat` or `mmap`.
    pub fn attach(fd: OwnedFd, arena: &'static str, len: u64) -> io::Result<PeerArena> {
        let seals = fixed_size_seals(&fd)?;
        if !seals.intersects(SealFlags::FUTURE_WRITE | SealFlags::WRITE) {
            return Err(RegionError::ArenaWritable {
                arena,
                found: seals.bits(),
            }
            .into());
        }
        let actual = u64::try_from(fstat(&fd)?.st_size).unwrap_or(0);
        let bytes = usize::try_from(len)
            .ok()
            .filter(|&l| actual == len && l > 0 && len % page_size() == 0)
            .ok_or(RegionError::ArenaSizeMismatch {
                arena,
                header: len,
                actual,
            })?;
        let map = Arc::new(
            MmapOptions::new()
                .len(bytes)
                .map_raw_read_only(fd.as_raw_fd())?,
        );
        let base = map_base(&map);
        // SAFETY: the mapping is page-aligned, `bytes` long (a multiple of
        // the page size), readable, and lives as long as the Arc handed
        // over; the file cannot shrink under it (F_SEAL_SHRINK, checked).
        let mem = unsafe { PeerMem::from_raw(base, bytes, map) };
        Ok(PeerArena { mem })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64
    }

    /// Whether the arena has no bytes (never true for an attached one).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// The read-only bytes.
    pub fn mem(&self) -> &PeerMem {
        &self.mem
    }
}

/// The seals of `fd`, which must include [`REQUIRED_SEALS`] (its size
/// can never change): [`RegionError::NotSealable`] if it takes no seals,
/// [`RegionError::Unsealed`] if one is missing.
fn fixed_size_seals(fd: &OwnedFd) -> io::Result<SealFlags> {
    let seals = match fcntl_get_seals(fd) {
        Ok(s) => s,
        Err(Errno::INVAL) => return Err(RegionError::NotSealable.into()),
        Err(e) => return Err(e.into()),
    };
    if !seals.contains(REQUIRED_SEALS) {
        return Err(RegionError::Unsealed {
            found: seals.bits(),
            missing: (REQUIRED_SEALS - seals).bits(),
        }
        .into());
    }
    Ok(seals)
}

/// One side's share of a region and the two arenas. The fields are
/// independent so the IPC layer can put each where it is used.
pub struct Endpoint {
    /// Which side this is.
    pub role: Role,
    /// Outgoing descriptors: requests (client) or responses (server).
    pub tx: Producer<Desc>,
    /// Incoming descriptors: responses (client) or requests (server).
    pub rx: Consumer<Desc>,
    /// This side's own arena: allocate and write outgoing bodies here.
    /// Nobody else can write it (see [`OwnArena`]).
    pub arena: Arena,
    /// The peer's arena, mapped read-only: read incoming bodies here, at
    /// the offsets of the peer's descriptors (bounds-checked by
    /// [`PeerMem`]).
    pub peer_arena: PeerMem,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.role)
            .field("arena", &self.arena)
            .field("peer_arena", &self.peer_arena)
            .finish_non_exhaustive()
    }
}

/// Keeps the region's mapping (and this process's claim on one side)
/// alive for as long as any ring handle of an [`Endpoint`] exists.
struct Owner {
    _claim: Claim,
    _map: Arc<MmapRaw>,
}

/// Sides taken in this process, by memfd identity. A peer in another
/// process is outside the ring's "one producer, one consumer per process"
/// contract; two [`Region`]s of the same memfd in one process (a test
/// attaching a dup, say) are not, so each side may be taken once.
static CLAIMS: Mutex<Vec<((u64, u64), Role)>> = Mutex::new(Vec::new());

/// This process's claim on one side of one memfd; released on drop.
struct Claim {
    key: (u64, u64),
    role: Role,
}

impl Claim {
    fn take(key: (u64, u64), role: Role) -> io::Result<Claim> {
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        if claims.contains(&(key, role)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("this process already holds the {role:?} side of this shm region"),
            ));
        }
        claims.push((key, role));
        Ok(Claim { key, role })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = claims.iter().position(|c| *c == (self.key, self.role)) {
            claims.swap_remove(i);
        }
    }
}

// The regions' file identity, which is stable while the fd is open.
fn file_key(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = fstat(fd)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ by target
    Ok((st.st_dev as u64, st.st_ino as u64))
}

fn map_shared(fd: &OwnedFd, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw(fd.as_raw_fd())
}

/// Header word `i` of a mapped region.
///
/// # Safety
///
/// The mapping is at least [`HEADER_BYTES`](super::HEADER_BYTES) long and
/// `i < HEADER_WORDS`.
unsafe fn header_word(map: &MmapRaw, i: usize) -> &AtomicU64 {
    debug_assert!(i < HEADER_WORDS);
    // SAFETY: in bounds (caller's contract) and 8-aligned (the mapping is
    // page-aligned); any bits are a valid AtomicU64, and atomics tolerate
    // the peer writing concurrently.
    unsafe { &*map.as_mut_ptr().cast::<AtomicU64>().add(i) }
}

/// The start of `area`, which must lie within the mapping (validated).
fn area_ptr(map: &MmapRaw, area: Area) -> *mut u8 {
    debug_assert!(area.offset + area.len <= map.len() as u64);
    // wrapping_add: computing the address needs no unsafe; it is in bounds
    // because the area was validated against the mapping's size.
    map.as_mut_ptr().wrapping_add(area.offset as usize)
}

/// The start of a mapping.
fn map_base(map: &MmapRaw) -> NonNull<u8> {
    NonNull::new(map.as_mut_ptr()).unwrap_or_else(|| unreachable!("mappings are not at null"))
}
