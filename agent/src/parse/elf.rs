//! A minimal ELF reader: just enough to find one named section (or, for old
//! Go binaries, translate a virtual address to a file offset) in an
//! executable that may be hundreds of megabytes long.
//!
//! The agent never reads a whole executable. It reads, in order:
//!
//! 1. the ELF header ([`HEADER_READ_LEN`] bytes at offset 0, parsed by
//!    [`parse_header`]);
//! 2. for files with 65,280 sections or more, the first section header
//!    (see "extended numbering" below);
//! 3. the program header table and the section header table
//!    ([`ElfHeader::program_table_range`], [`ElfHeader::section_table_range`],
//!    parsed by [`parse_program_headers`] and [`parse_section_headers`]);
//! 4. the section-name string table (`e_shstrndx`), in which
//!    [`find_section`] looks up names such as `.go.buildinfo` or `.dep-v0`;
//! 5. only the wanted section.
//!
//! [`ElfFile::read`] runs steps 1 to 4 through a caller-supplied
//! `read_at(offset, len)` function, so the I/O stays with the caller while
//! every caller walks the file the same way. The slice parsers can also be
//! used on their own.
//!
//! Quirks handled here:
//!
//! * Both classes (ELF32 and ELF64) and both byte orders. The byte order in
//!   `e_ident[EI_DATA]` applies to every multi-byte field, including those
//!   of the sections read later (Go's pre-1.18 buildinfo pointers).
//! * Extended numbering: when a file has too many sections for the 16-bit
//!   header fields, `e_shnum` is 0 and the real count is in `sh_size` of
//!   section 0; `e_shstrndx` is `SHN_XINDEX` (0xffff) and the real index is
//!   in `sh_link` of section 0; `e_phnum` is `PN_XNUM` (0xffff) and the real
//!   count is in `sh_info` of section 0.
//! * Stripped or packed executables may have no section header table at all
//!   (`e_shoff` is 0). Go's buildinfo can still be found through the program
//!   headers, see `gobuild`.
//! * `SHT_NOBITS` sections (`.bss`) occupy no bytes in the file, whatever
//!   their `sh_size` says.
//!
//! Everything read from the file is hostile: counts are capped
//! ([`MAX_SECTIONS`], [`MAX_PROGRAM_HEADERS`], [`MAX_STRTAB_LEN`],
//! [`MAX_SECTION_NAME_LEN`]), entry sizes must be the standard ones, and
//! offset arithmetic is checked, so a header claiming 2^32 sections at
//! offset 2^64 - 1 costs nothing.

use super::{ParseError, malformed};

/// How many bytes the caller should read at offset 0 for [`parse_header`]:
/// the size of an ELF64 header (an ELF32 header is 52 bytes).
pub const HEADER_READ_LEN: usize = 64;

/// At most this many section headers are parsed. Larger tables (possible
/// only with extended numbering) are truncated to their first entries.
pub const MAX_SECTIONS: usize = 65_536;

/// At most this many program headers are parsed. Real executables have a
/// dozen or so.
pub const MAX_PROGRAM_HEADERS: usize = 4_096;

/// At most this many bytes of the section-name string table are read. Real
/// tables are a few hundred bytes; names past the cap are not found.
pub const MAX_STRTAB_LEN: usize = 1 << 20;

/// Section names longer than this are treated as unterminated.
pub const MAX_SECTION_NAME_LEN: usize = 1_024;

/// `sh_type` of sections that occupy no space in the file (`.bss`).
pub const SHT_NOBITS: u32 = 8;

/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;

/// `p_flags` bit: the segment is executable.
pub const PF_X: u32 = 1;

/// `p_flags` bit: the segment is writable.
pub const PF_W: u32 = 2;

/// `e_shstrndx` value meaning "the real index is in section 0's `sh_link`".
const SHN_XINDEX: u32 = 0xffff;

/// `e_phnum` value meaning "the real count is in section 0's `sh_info`".
const PN_XNUM: u32 = 0xffff;

/// Sizes of the on-disk structures, by class.
const EHDR32_LEN: usize = 52;
const SHDR64_LEN: u16 = 64;
const SHDR32_LEN: u16 = 40;
const PHDR64_LEN: u16 = 56;
const PHDR32_LEN: u16 = 32;

/// The fields of the ELF header that locate the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfHeader {
    /// `ELFCLASS64` (true) or `ELFCLASS32` (false).
    pub is_64: bool,
    /// `ELFDATA2MSB` (true) or `ELFDATA2LSB` (false).
    pub big_endian: bool,
    /// `e_type`: 2 for executables, 3 for shared objects and PIEs.
    pub elf_type: u16,
    /// `e_machine`, e.g. 62 for x86-64 or 183 for AArch64.
    pub machine: u16,
    /// `e_phoff`: file offset of the program header table, 0 if none.
    pub phoff: u64,
    /// `e_phentsize`: size of one program header.
    pub phentsize: u16,
    /// `e_phnum`, or the real count once extended numbering is resolved.
    pub phnum: u32,
    /// `e_shoff`: file offset of the section header table, 0 if none.
    pub shoff: u64,
    /// `e_shentsize`: size of one section header.
    pub shentsize: u16,
    /// `e_shnum`, or the real count once extended numbering is resolved.
    pub shnum: u32,
    /// `e_shstrndx`, or the real index once extended numbering is resolved.
    pub shstrndx: u32,
}

/// One section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Section {
    /// `sh_name`: offset of the name in the section-name string table.
    pub name_offset: u32,
    /// `sh_type`, e.g. 1 for `SHT_PROGBITS`, [`SHT_NOBITS`] for `.bss`.
    pub ty: u32,
    /// `sh_flags` (`SHF_WRITE` = 1, `SHF_ALLOC` = 2, `SHF_EXECINSTR` = 4).
    pub flags: u64,
    /// `sh_addr`: virtual address when loaded, 0 if not loaded.
    pub addr: u64,
    /// `sh_offset`: file offset of the contents.
    pub offset: u64,
    /// `sh_size`: size of the contents in bytes.
    pub size: u64,
    /// `sh_link`; in section 0, the extended `e_shstrndx`.
    pub link: u32,
    /// `sh_info`; in section 0, the extended `e_phnum`.
    pub info: u32,
}

impl Section {
    /// The `(offset, len)` of the section's bytes in the file, or `None`
    /// for `SHT_NOBITS` sections and for ranges that overflow.
    pub fn file_range(&self) -> Option<(u64, u64)> {
        if self.ty == SHT_NOBITS {
            return None;
        }
        self.offset.checked_add(self.size)?;
        Some((self.offset, self.size))
    }
}

/// One program header (segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramHeader {
    /// `p_type`, e.g. [`PT_LOAD`].
    pub ty: u32,
    /// `p_flags`: [`PF_X`], [`PF_W`], `PF_R` (4).
    pub flags: u32,
    /// `p_offset`: file offset of the segment.
    pub offset: u64,
    /// `p_vaddr`: virtual address of the segment.
    pub vaddr: u64,
    /// `p_filesz`: bytes of the segment present in the file.
    pub filesz: u64,
    /// `p_memsz`: bytes of the segment in memory (at least `filesz`).
    pub memsz: u64,
}

/// Reads fixed-width integers in the file's byte order, returning `None`
/// instead of reading out of bounds.
#[derive(Clone, Copy)]
struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.bytes.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let a = self.array(at)?;
        Some(if self.big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let a = self.array(at)?;
        Some(if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }

    fn u64(&self, at: usize) -> Option<u64> {
        let a = self.array(at)?;
        Some(if self.big_endian {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        })
    }

    /// A class-sized word: 8 bytes in ELF64, 4 bytes in ELF32.
    fn word(&self, at: usize, is_64: bool) -> Option<u64> {
        if is_64 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }
}

/// Parses the ELF header from the first bytes of a file (at least 52 bytes
/// for ELF32, 64 for ELF64; [`HEADER_READ_LEN`] is always enough).
///
/// Fails on a wrong magic number, an unknown class or byte order, or a
/// truncated header. The table locations are returned as found; they are
/// validated when used ([`ElfHeader::section_table_range`]).
pub fn parse_header(bytes: &[u8]) -> Result<ElfHeader, ParseError> {
    if !bytes.starts_with(b"\x7fELF") {
        return Err(malformed("elf", "not an ELF file"));
    }
    let is_64 = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(malformed("elf", "unknown class")),
    };
    let big_endian = match bytes.get(5) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(malformed("elf", "unknown byte order")),
    };
    let needed = if is_64 { HEADER_READ_LEN } else { EHDR32_LEN };
    if bytes.len() < needed {
        return Err(malformed("elf", "truncated header"));
    }
    let f = Fields { bytes, big_endian };
    // ELF64 has 8-byte e_entry, e_phoff and e_shoff; everything after them
    // moves by 12 bytes between the classes.
    let (phoff, shoff, rest) = if is_64 {
        (f.u64(32), f.u64(40), 52)
    } else {
        (f.u32(28).map(u64::from), f.u32(32).map(u64::from), 40)
    };
    let header = (|| {
        Some(ElfHeader {
            is_64,
            big_endian,
            elf_type: f.u16(16)?,
            machine: f.u16(18)?,
            phoff: phoff?,
            shoff: shoff?,
            phentsize: f.u16(rest + 2)?,
            phnum: u32::from(f.u16(rest + 4)?),
            shentsize: f.u16(rest + 6)?,
            shnum: u32::from(f.u16(rest + 8)?),
            shstrndx: u32::from(f.u16(rest + 10)?),
        })
    })();
    header.ok_or_else(|| malformed("elf", "truncated header"))
}

impl ElfHeader {
    /// The standard section header size for this class.
    fn shdr_len(&self) -> u16 {
        if self.is_64 { SHDR64_LEN } else { SHDR32_LEN }
    }

    /// The standard program header size for this class.
    fn phdr_len(&self) -> u16 {
        if self.is_64 { PHDR64_LEN } else { PHDR32_LEN }
    }

    /// Whether section 0 must be read (with [`Self::section_zero_range`])
    /// and passed to [`Self::resolve_extended_numbering`] before the counts
    /// and the string table index can be trusted.
    pub fn needs_section_zero(&self) -> bool {
        self.shoff != 0 && (self.shnum == 0 || self.shstrndx == SHN_XINDEX || self.phnum == PN_XNUM)
    }

    /// Where section 0 lies in the file: `(offset, len)`.
    pub fn section_zero_range(&self) -> Result<(u64, usize), ParseError> {
        if self.shentsize != self.shdr_len() {
            return Err(malformed("elf", "bad section header size"));
        }
        Ok((self.shoff, usize::from(self.shentsize)))
    }

    /// Applies extended numbering from the bytes of section 0: the section
    /// count from its `sh_size` when `e_shnum` is 0, the string table index
    /// from its `sh_link` when `e_shstrndx` is `SHN_XINDEX`, and the program
    /// header count from its `sh_info` when `e_phnum` is `PN_XNUM`. Counts
    /// are clamped to `u32`; [`MAX_SECTIONS`] applies later.
    ///
    /// Call it at most once: afterwards [`Self::needs_section_zero`] may
    /// still be true (section 0 may say 0 sections too).
    pub fn resolve_extended_numbering(&mut self, section_zero: &[u8]) -> Result<(), ParseError> {
        let s0 = parse_one_section(section_zero, self)
            .ok_or_else(|| malformed("elf", "truncated section 0"))?;
        if self.shnum == 0 {
            self.shnum = u32::try_from(s0.size).unwrap_or(u32::MAX);
        }
        if self.shstrndx == SHN_XINDEX {
            self.shstrndx = s0.link;
        }
        if self.phnum == PN_XNUM {
            self.phnum = s0.info;
        }
        Ok(())
    }

    /// Where the section header table lies in the file: `(offset, len)`,
    /// covering at most [`MAX_SECTIONS`] entries. `None` when the file has
    /// no section header table.
    pub fn section_table_range(&self) -> Result<Option<(u64, usize)>, ParseError> {
        if self.shoff == 0 || self.shnum == 0 {
            return Ok(None);
        }
        if self.shentsize != self.shdr_len() {
            return Err(malformed("elf", "bad section header size"));
        }
        let count = (self.shnum as usize).min(MAX_SECTIONS);
        table_range(self.shoff, count, self.shentsize).map(Some)
    }

    /// Where the program header table lies in the file: `(offset, len)`,
    /// covering at most [`MAX_PROGRAM_HEADERS`] entries. `None` when the
    /// file has no program header table.
    pub fn program_table_range(&self) -> Result<Option<(u64, usize)>, ParseError> {
        if self.phoff == 0 || self.phnum == 0 {
            return Ok(None);
        }
        if self.phentsize != self.phdr_len() {
            return Err(malformed("elf", "bad program header size"));
        }
        let count = (self.phnum as usize).min(MAX_PROGRAM_HEADERS);
        table_range(self.phoff, count, self.phentsize).map(Some)
    }
}

/// `(offset, count * entsize)`, checking that the range fits in `u64`.
fn table_range(offset: u64, count: usize, entsize: u16) -> Result<(u64, usize), ParseError> {
    // count is at most MAX_SECTIONS and entsize at most 64, so this cannot
    // overflow usize; the end of the range can overflow u64.
    let len = count * usize::from(entsize);
    offset
        .checked_add(len as u64)
        .ok_or_else(|| malformed("elf", "table offset overflows"))?;
    Ok((offset, len))
}

/// Parses one section header in the class and byte order of `header`.
fn parse_one_section(bytes: &[u8], header: &ElfHeader) -> Option<Section> {
    let f = Fields {
        bytes,
        big_endian: header.big_endian,
    };
    if header.is_64 {
        Some(Section {
            name_offset: f.u32(0)?,
            ty: f.u32(4)?,
            flags: f.u64(8)?,
            addr: f.u64(16)?,
            offset: f.u64(24)?,
            size: f.u64(32)?,
            link: f.u32(40)?,
            info: f.u32(44)?,
        })
    } else {
        Some(Section {
            name_offset: f.u32(0)?,
            ty: f.u32(4)?,
            flags: u64::from(f.u32(8)?),
            addr: u64::from(f.u32(12)?),
            offset: u64::from(f.u32(16)?),
            size: u64::from(f.u32(20)?),
            link: f.u32(24)?,
            info: f.u32(28)?,
        })
    }
}

/// Parses the section header table (the bytes at
/// [`ElfHeader::section_table_range`]). A short table (the file ended
/// early) yields the entries that are complete; a table whose entry size is
/// not the standard one yields nothing. At most [`MAX_SECTIONS`] entries.
pub fn parse_section_headers(bytes: &[u8], header: &ElfHeader) -> Vec<Section> {
    let entsize = usize::from(header.shentsize);
    if header.shentsize != header.shdr_len() {
        return Vec::new();
    }
    let count = (header.shnum as usize).min(MAX_SECTIONS);
    bytes
        .chunks_exact(entsize)
        .take(count)
        .filter_map(|entry| parse_one_section(entry, header))
        .collect()
}

/// Parses the program header table (the bytes at
/// [`ElfHeader::program_table_range`]), with the same rules as
/// [`parse_section_headers`]. At most [`MAX_PROGRAM_HEADERS`] entries.
pub fn parse_program_headers(bytes: &[u8], header: &ElfHeader) -> Vec<ProgramHeader> {
    let entsize = usize::from(header.phentsize);
    if header.phentsize != header.phdr_len() {
        return Vec::new();
    }
    let count = (header.phnum as usize).min(MAX_PROGRAM_HEADERS);
    let is_64 = header.is_64;
    bytes
        .chunks_exact(entsize)
        .take(count)
        .filter_map(|entry| {
            let f = Fields {
                bytes: entry,
                big_endian: header.big_endian,
            };
            // ELF64 moves p_flags up next to p_type, for alignment.
            let (flags, base) = if is_64 {
                (f.u32(4)?, 8)
            } else {
                (f.u32(24)?, 4)
            };
            let w = if is_64 { 8 } else { 4 };
            Some(ProgramHeader {
                ty: f.u32(0)?,
                flags,
                offset: f.word(base, is_64)?,
                vaddr: f.word(base + w, is_64)?,
                // p_paddr at base + 2w is skipped.
                filesz: f.word(base + 3 * w, is_64)?,
                memsz: f.word(base + 4 * w, is_64)?,
            })
        })
        .collect()
}

/// Translates the virtual address range `[vaddr, vaddr + len)` to a file
/// offset, through the `PT_LOAD` segment that contains all of it within its
/// file-backed part (`p_filesz`). `None` if no segment does.
pub fn vaddr_to_offset(program_headers: &[ProgramHeader], vaddr: u64, len: u64) -> Option<u64> {
    let end = vaddr.checked_add(len)?;
    program_headers.iter().find_map(|p| {
        let seg_end = p.vaddr.checked_add(p.filesz)?;
        if p.ty == PT_LOAD && p.vaddr <= vaddr && end <= seg_end {
            p.offset.checked_add(vaddr - p.vaddr)
        } else {
            None
        }
    })
}

/// The NUL-terminated name at `name_offset` in a section-name string table,
/// without the NUL. `None` when the offset is out of range or no NUL
/// follows within [`MAX_SECTION_NAME_LEN`] bytes.
pub fn section_name(strtab: &[u8], name_offset: u32) -> Option<&[u8]> {
    let rest = strtab.get(name_offset as usize..)?;
    let window = &rest[..rest.len().min(MAX_SECTION_NAME_LEN + 1)];
    let nul = window.iter().position(|&b| b == 0)?;
    Some(&window[..nul])
}

/// The first section called `name`. Each comparison looks at no more than
/// `name.len() + 1` bytes of the string table, so a hostile table of long
/// unterminated names costs no more than a clean one.
pub fn find_section<'a>(headers: &'a [Section], strtab: &[u8], name: &[u8]) -> Option<&'a Section> {
    headers.iter().find(|s| {
        let start = s.name_offset as usize;
        let Some(end) = start.checked_add(name.len()) else {
            return false;
        };
        strtab.get(start..end) == Some(name) && strtab.get(end) == Some(&0)
    })
}

/// The error of the functions that read a file through a caller-supplied
/// `read_at` function: either that function failed, or the bytes it
/// returned were malformed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E: std::error::Error + 'static> {
    /// The caller's `read_at` failed.
    #[error("reading the file failed")]
    Read(#[source] E),
    /// The bytes read were malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Calls `read_at` and makes sure it returned no more than `len` bytes.
/// Fewer bytes mean the file ended early.
fn read_capped<E, F>(read_at: &mut F, offset: u64, len: usize) -> Result<Vec<u8>, ReadError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
{
    let mut bytes = read_at(offset, len).map_err(ReadError::Read)?;
    bytes.truncate(len);
    Ok(bytes)
}

/// The tables of an ELF file, read through [`ElfFile::read`]: everything
/// needed to find and read a section or translate an address, and nothing
/// else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFile {
    /// The ELF header, with extended numbering resolved.
    pub header: ElfHeader,
    /// The program headers (empty if there are none).
    pub program_headers: Vec<ProgramHeader>,
    /// The section headers (empty if there is no section header table).
    pub sections: Vec<Section>,
    /// The section-name string table, at most [`MAX_STRTAB_LEN`] bytes
    /// (empty if there is none).
    pub strtab: Vec<u8>,
}

impl ElfFile {
    /// Reads the ELF header, the program and section header tables and the
    /// section-name string table through `read_at(offset, len)`, which must
    /// return the `len` bytes at `offset`, or fewer only where the file
    /// ends.
    ///
    /// Tables that the file cuts short are kept as far as they go, tables
    /// with non-standard entry sizes are ignored, and a missing string
    /// table leaves `strtab` empty (so no section is found by name). Only
    /// an unusable ELF header or a failing `read_at` is an error.
    pub fn read<E, F>(read_at: &mut F) -> Result<Self, ReadError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
    {
        let mut header = parse_header(&read_capped(read_at, 0, HEADER_READ_LEN)?)?;
        // A bad section 0 leaves the counts unresolved: the tables are then
        // read as far as the plain header fields allow.
        if header.needs_section_zero()
            && let Ok((offset, len)) = header.section_zero_range()
        {
            let bytes = read_capped(read_at, offset, len)?;
            let _ = header.resolve_extended_numbering(&bytes);
        }
        let program_headers = match header.program_table_range() {
            Ok(Some((offset, len))) => {
                parse_program_headers(&read_capped(read_at, offset, len)?, &header)
            }
            Ok(None) | Err(_) => Vec::new(),
        };
        let sections = match header.section_table_range() {
            Ok(Some((offset, len))) => {
                parse_section_headers(&read_capped(read_at, offset, len)?, &header)
            }
            Ok(None) | Err(_) => Vec::new(),
        };
        let strtab = match sections
            .get(header.shstrndx as usize)
            .and_then(Section::file_range)
        {
            Some((offset, size)) => {
                let len = usize::try_from(size)
                    .unwrap_or(usize::MAX)
                    .min(MAX_STRTAB_LEN);
                read_capped(read_at, offset, len)?
            }
            None => Vec::new(),
        };
        Ok(ElfFile {
            header,
            program_headers,
            sections,
            strtab,
        })
    }

    /// The first section called `name`, see [`find_section`].
    pub fn find_section(&self, name: &[u8]) -> Option<&Section> {
        find_section(&self.sections, &self.strtab, name)
    }

    /// Reads the whole contents of `section`. Fails if it has no bytes in
    /// the file (`SHT_NOBITS`), is larger than `max_len`, or extends past
    /// the end of the file.
    pub fn read_section<E, F>(
        &self,
        section: &Section,
        max_len: usize,
        read_at: &mut F,
    ) -> Result<Vec<u8>, ReadError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
    {
        let (offset, size) = section
            .file_range()
            .ok_or_else(|| malformed("elf", "section has no file contents"))?;
        let len = usize::try_from(size)
            .ok()
            .filter(|&len| len <= max_len)
            .ok_or_else(|| malformed("elf", format!("section larger than {max_len} bytes")))?;
        let bytes = read_capped(read_at, offset, len)?;
        if bytes.len() < len {
            return Err(malformed("elf", "section extends past the end of the file").into());
        }
        Ok(bytes)
    }

    /// Reads `len` bytes at virtual address `vaddr`, translated with
    /// [`vaddr_to_offset`]. Fails if no loadable segment holds the whole
    /// range in the file, or the file ends early. The caller caps `len`.
    pub fn read_vaddr<E, F>(
        &self,
        vaddr: u64,
        len: usize,
        read_at: &mut F,
    ) -> Result<Vec<u8>, ReadError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(u64, usize) -> Result<Vec<u8>, E>,
    {
        let offset = vaddr_to_offset(&self.program_headers, vaddr, len as u64)
            .ok_or_else(|| malformed("elf", "address not in a loaded segment"))?;
        let bytes = read_capped(read_at, offset, len)?;
        if bytes.len() < len {
            return Err(malformed("elf", "segment extends past the end of the file").into());
        }
        Ok(bytes)
    }
}

/// Test helpers shared with the `gobuild` and `auditable` tests: the fuzz
/// generator, a writer of small ELF files, and `read_at` functions over
/// slices and real files.
#[cfg(test)]
pub(crate) mod testutil {
    use std::cell::Cell;
    use std::io;

    pub(crate) use crate::parse::fuzz::Rng;
    pub(crate) fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::parse::fuzz::mutate(rng, fixture, ALPHABET)
    }

    /// Bytes that are structurally meaningful to these parsers.
    pub(crate) const ALPHABET: &[u8] =
        b"\0\x01\x02\x08\x10\x40\x7f\x80\xff\t\n=\"`\\{}[]:,0123456789abcdefx.ELF mod dep => build path";

    /// A `read_at` over an in-memory file.
    pub(crate) fn slice_reader(bytes: &[u8]) -> impl FnMut(u64, usize) -> io::Result<Vec<u8>> + '_ {
        move |offset, len| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(len).min(bytes.len());
            Ok(bytes[start..end].to_vec())
        }
    }

    /// A `read_at` over a real file, as the agent does it, adding the number
    /// of bytes read to `total`.
    pub(crate) fn file_reader<'a>(
        file: &'a std::fs::File,
        total: &'a Cell<u64>,
    ) -> impl FnMut(u64, usize) -> io::Result<Vec<u8>> + 'a {
        use std::os::unix::fs::FileExt;
        move |offset, len| {
            let mut buf = vec![0; len];
            let mut got = 0;
            while got < len {
                match file.read_at(&mut buf[got..], offset.saturating_add(got as u64)) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            total.set(total.get() + got as u64);
            Ok(buf)
        }
    }

    /// Reads a file of the shared test data: from `testdata/` in the
    /// workspace if it was copied there, else from the `shared/data`
    /// directory beside the workspace.
    pub(crate) fn shared_data(rel: &str) -> Vec<u8> {
        let manifest = env!("CARGO_MANIFEST_DIR");
        let candidates = [
            format!("{manifest}/../testdata/{rel}"),
            format!("{manifest}/../../shared/data/{rel}"),
        ];
        for path in &candidates {
            if let Ok(bytes) = std::fs::read(path) {
                return bytes;
            }
        }
        panic!("test data {rel} not found in {candidates:?}");
    }

    /// One section of a test ELF file.
    pub(crate) struct TestSection {
        pub(crate) name: &'static [u8],
        pub(crate) ty: u32,
        pub(crate) addr: u64,
        pub(crate) data: Vec<u8>,
        /// `Some(p_flags)` to cover the section with its own `PT_LOAD`.
        pub(crate) load: Option<u32>,
        /// Also cover the section with a `PT_GNU_RELRO` header.
        pub(crate) relro: bool,
    }

    impl TestSection {
        pub(crate) fn progbits(name: &'static [u8], addr: u64, data: Vec<u8>) -> Self {
            TestSection {
                name,
                ty: 1,
                addr,
                data,
                load: None,
                relro: false,
            }
        }
    }

    fn put(out: &mut [u8], at: usize, value: u64, width: usize, big: bool) {
        let bytes = value.to_le_bytes();
        let field = &mut out[at..at + width];
        field.copy_from_slice(&bytes[..width]);
        if big {
            field.reverse();
        }
    }

    /// Writes an ELF file: header, program headers, section contents, the
    /// section-name string table, then the section header table. With
    /// `extended`, the counts and string table index are stored in section
    /// 0 the way files with more than 65,279 sections do it.
    pub(crate) fn build_elf(
        is_64: bool,
        big: bool,
        sections: &[TestSection],
        extended: bool,
    ) -> Vec<u8> {
        let w = if is_64 { 8 } else { 4 };
        let (ehsize, phsize, shsize) = if is_64 { (64, 56, 64) } else { (52, 32, 40) };
        // (p_type, p_flags, section index) of each program header.
        let mut phdrs: Vec<(u64, u32, usize)> = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            if let Some(flags) = s.load {
                phdrs.push((1, flags, i));
            }
        }
        for (i, s) in sections.iter().enumerate() {
            if s.relro {
                phdrs.push((0x6474_e552, 4, i));
            }
        }
        let mut out = vec![0u8; ehsize + phsize * phdrs.len()];
        // Section contents, each 16-aligned.
        let mut offsets = Vec::new();
        for s in sections {
            while !out.len().is_multiple_of(16) {
                out.push(0);
            }
            offsets.push(out.len());
            out.extend_from_slice(&s.data);
        }
        let mut strtab = vec![0u8];
        let mut name_offsets = Vec::new();
        for s in sections {
            name_offsets.push(strtab.len());
            strtab.extend_from_slice(s.name);
            strtab.push(0);
        }
        let shstrtab_name = strtab.len();
        strtab.extend_from_slice(b".shstrtab\0");
        let strtab_offset = out.len();
        out.extend_from_slice(&strtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len();
        let shnum = sections.len() + 2;
        let shstrndx = shnum - 1;
        out.resize(shoff + shnum * shsize, 0);

        // The ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = if is_64 { 2 } else { 1 };
        out[5] = if big { 2 } else { 1 };
        out[6] = 1;
        put(&mut out, 16, 2, 2, big); // ET_EXEC
        put(&mut out, 18, 62, 2, big);
        put(&mut out, 20, 1, 4, big);
        let rest = if is_64 { 52 } else { 40 };
        put(
            &mut out,
            24 + w,
            if phdrs.is_empty() { 0 } else { ehsize as u64 },
            w,
            big,
        );
        put(&mut out, 24 + 2 * w, shoff as u64, w, big);
        put(&mut out, rest, ehsize as u64, 2, big);
        put(&mut out, rest + 2, phsize as u64, 2, big);
        put(&mut out, rest + 4, phdrs.len() as u64, 2, big);
        put(&mut out, rest + 6, shsize as u64, 2, big);
        let (e_shnum, e_shstrndx) = if extended {
            (0, 0xffff)
        } else {
            (shnum as u64, shstrndx as u64)
        };
        put(&mut out, rest + 8, e_shnum, 2, big);
        put(&mut out, rest + 10, e_shstrndx, 2, big);

        // Program headers.
        let mut ph = ehsize;
        for &(ty, flags, i) in &phdrs {
            let (s, off) = (&sections[i], offsets[i]);
            let len = s.data.len() as u64;
            put(&mut out, ph, ty, 4, big);
            if is_64 {
                put(&mut out, ph + 4, u64::from(flags), 4, big);
                for (i, v) in [off as u64, s.addr, s.addr, len, len, 16]
                    .iter()
                    .enumerate()
                {
                    put(&mut out, ph + 8 + 8 * i, *v, 8, big);
                }
            } else {
                for (i, v) in [off as u64, s.addr, s.addr, len, len].iter().enumerate() {
                    put(&mut out, ph + 4 + 4 * i, *v, 4, big);
                }
                put(&mut out, ph + 24, u64::from(flags), 4, big);
                put(&mut out, ph + 28, 16, 4, big);
            }
            ph += phsize;
        }

        // Section headers: the null section, the user's, then .shstrtab.
        let mut write_shdr =
            |index: usize, name: usize, ty: u32, addr: u64, off: usize, size: usize, link: u64| {
                let at = shoff + index * shsize;
                put(&mut out, at, name as u64, 4, big);
                put(&mut out, at + 4, u64::from(ty), 4, big);
                put(&mut out, at + 8 + w, addr, w, big);
                put(&mut out, at + 8 + 2 * w, off as u64, w, big);
                put(&mut out, at + 8 + 3 * w, size as u64, w, big);
                put(&mut out, at + 8 + 4 * w, link, 4, big);
            };
        if extended {
            write_shdr(0, 0, 0, 0, 0, shnum, shstrndx as u64);
        }
        for (i, s) in sections.iter().enumerate() {
            write_shdr(
                i + 1,
                name_offsets[i],
                s.ty,
                s.addr,
                offsets[i],
                s.data.len(),
                0,
            );
        }
        write_shdr(
            shstrndx,
            shstrtab_name,
            3,
            0,
            strtab_offset,
            strtab.len(),
            0,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use std::cell::Cell;
    use std::process::Command;

    /// Reads a file through the same steps the agent takes.
    fn read_file(path: &str, total: &Cell<u64>) -> Option<ElfFile> {
        let file = std::fs::File::open(path).ok()?;
        let mut read_at = file_reader(&file, total);
        Some(ElfFile::read(&mut read_at).expect(path))
    }

    /// Runs a binutils tool (test-only I/O), or `None` if it is missing.
    fn tool(name: &str, args: &[&str]) -> Option<String> {
        let out = Command::new(name).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn hex(s: &str) -> u64 {
        u64::from_str_radix(s.trim_start_matches("0x"), 16).expect(s)
    }

    /// `(name, addr, offset, size)` of every section, as `readelf -S -W`
    /// prints them.
    fn readelf_sections(path: &str) -> Option<Vec<(String, u64, u64, u64)>> {
        let text = tool("readelf", &["-S", "-W", path])?;
        let mut out = Vec::new();
        for line in text.lines() {
            let Some((_, rest)) = line.split_once("] ") else {
                continue;
            };
            if !line.trim_start().starts_with('[') || rest.trim_start().starts_with("Name") {
                continue;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Section 0 has no name, so its fields start one column early.
            let f = if f[0] == "NULL" {
                let mut v = vec![""];
                v.extend(f);
                v
            } else {
                f
            };
            out.push((f[0].to_string(), hex(f[2]), hex(f[3]), hex(f[4])));
        }
        Some(out)
    }

    /// `(offset, vaddr, filesz, memsz)` of every PT_LOAD, from `readelf -l`.
    fn readelf_loads(path: &str) -> Option<Vec<(u64, u64, u64, u64)>> {
        let text = tool("readelf", &["-l", "-W", path])?;
        Some(
            text.lines()
                .filter(|l| l.trim_start().starts_with("LOAD "))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (hex(f[1]), hex(f[2]), hex(f[4]), hex(f[5]))
                })
                .collect(),
        )
    }

    /// Checks our view of `path` against readelf's.
    fn check_against_readelf(path: &str) {
        if !crate::parse::image::has(path) {
            return;
        }
        let total = Cell::new(0);
        let elf = read_file(path, &total).unwrap();
        let Some(want) = readelf_sections(path) else {
            eprintln!("no readelf here; skipping {path}");
            return;
        };
        let got: Vec<(String, u64, u64, u64)> = elf
            .sections
            .iter()
            .map(|s| {
                let name = section_name(&elf.strtab, s.name_offset).expect("name");
                (
                    String::from_utf8_lossy(name).into_owned(),
                    s.addr,
                    s.offset,
                    s.size,
                )
            })
            .collect();
        assert_eq!(got, want, "{path}");
        // Every section is found by its name (the first of duplicates).
        for (i, (name, ..)) in want.iter().enumerate() {
            let found = elf.find_section(name.as_bytes()).expect(name);
            let first = want.iter().position(|w| w.0 == *name).unwrap();
            assert_eq!(*found, elf.sections[first], "{path} {name} {i}");
        }
        if let Some(loads) = readelf_loads(path) {
            let got: Vec<_> = elf
                .program_headers
                .iter()
                .filter(|p| p.ty == PT_LOAD)
                .map(|p| (p.offset, p.vaddr, p.filesz, p.memsz))
                .collect();
            assert_eq!(got, loads, "{path}");
        }
        // Only the tables were read, never the bulk of the file.
        assert!(
            total.get() < 256 << 10,
            "{path}: read {} bytes",
            total.get()
        );
    }

    #[test]
    fn real_executables_match_readelf() {
        // Test-only I/O: the parsers never read files.
        for path in [
            "/bin/true",
            "/usr/local/bin/docker",
            "/usr/local/bin/terraform",
            "/opt/tf-plugins/registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws_v5.100.0_x5",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ] {
            check_against_readelf(path);
        }
    }

    /// A scratch directory for files made by binutils in the tests.
    pub(crate) fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("patchgap-elf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn objcopy_made_classes_and_byte_orders_match_readelf() {
        // objcopy can rewrite /bin/true as ELF32, and can wrap raw bytes in
        // an object file of any class and byte order.
        let dir = scratch_dir("classes");
        let payload = dir.join("payload");
        std::fs::write(&payload, b"hello, sections").unwrap();
        let payload = payload.to_str().unwrap();
        let mut made = 0;
        for target in ["elf32-little", "elf32-x86-64"] {
            let out = dir.join(target);
            let out = out.to_str().unwrap();
            if tool("objcopy", &["-O", target, "/bin/true", out]).is_some() {
                check_against_readelf(out);
                let elf = read_file(out, &Cell::new(0)).unwrap();
                assert!(!elf.header.is_64);
                made += 1;
            }
        }
        for (target, is_64, big) in [
            ("elf32-big", false, true),
            ("elf64-big", true, true),
            ("elf32-little", false, false),
            ("elf64-little", true, false),
        ] {
            let out = dir.join(format!("{target}.o"));
            let out = out.to_str().unwrap();
            let args = [
                "-I",
                "binary",
                "-O",
                target,
                "--rename-section",
                ".data=.payload",
                payload,
                out,
            ];
            if tool("objcopy", &args).is_none() {
                continue;
            }
            made += 1;
            check_against_readelf(out);
            let total = Cell::new(0);
            let elf = read_file(out, &total).unwrap();
            assert_eq!((elf.header.is_64, elf.header.big_endian), (is_64, big));
            let section = *elf.find_section(b".payload").expect(target);
            let file = std::fs::File::open(out).unwrap();
            let mut read_at = file_reader(&file, &total);
            let data = elf.read_section(&section, 1024, &mut read_at).unwrap();
            assert_eq!(data, b"hello, sections");
        }
        let _ = std::fs::remove_dir_all(&dir);
        if made == 0 {
            eprintln!("no objcopy here; skipping");
        }
    }

    #[test]
    fn built_files_in_every_class_and_byte_order() {
        for is_64 in [false, true] {
            for big in [false, true] {
                for extended in [false, true] {
                    let bytes = build_elf(
                        is_64,
                        big,
                        &[
                            TestSection {
                                load: Some(PF_W | 4),
                                ..TestSection::progbits(b".data", 0x40_1000, b"0123456789".to_vec())
                            },
                            TestSection {
                                ty: SHT_NOBITS,
                                ..TestSection::progbits(b".bss", 0x40_2000, vec![0; 4])
                            },
                            TestSection::progbits(b".note", 0, b"abc".to_vec()),
                        ],
                        extended,
                    );
                    let what = (is_64, big, extended);
                    let elf = ElfFile::read(&mut slice_reader(&bytes)).unwrap();
                    assert_eq!(elf.header.is_64, is_64);
                    assert_eq!(elf.header.big_endian, big);
                    assert_eq!(elf.header.shnum, 5, "{what:?}");
                    assert_eq!(elf.header.shstrndx, 4, "{what:?}");
                    assert_eq!(elf.sections.len(), 5);
                    let data = *elf.find_section(b".data").unwrap();
                    assert_eq!(data.addr, 0x40_1000);
                    let got = elf
                        .read_section(&data, 64, &mut slice_reader(&bytes))
                        .unwrap();
                    assert_eq!(got, b"0123456789");
                    let note = *elf.find_section(b".note").unwrap();
                    let got = elf
                        .read_section(&note, 64, &mut slice_reader(&bytes))
                        .unwrap();
                    assert_eq!(got, b"abc");
                    // .bss has no bytes in the file.
                    let bss = *elf.find_section(b".bss").unwrap();
                    assert!(
                        elf.read_section(&bss, 64, &mut slice_reader(&bytes))
                            .is_err()
                    );
                    assert!(elf.find_section(b".dat").is_none());
                    assert!(elf.find_section(b".data2").is_none());
                    assert!(
                        elf.find_section(b"").is_some(),
                        "section 0 has the empty name"
                    );
                    // Address translation.
                    assert_eq!(elf.program_headers.len(), 1);
                    let got = elf
                        .read_vaddr(0x40_1003, 4, &mut slice_reader(&bytes))
                        .unwrap();
                    assert_eq!(got, b"3456");
                    assert!(
                        elf.read_vaddr(0x40_1008, 3, &mut slice_reader(&bytes))
                            .is_err()
                    );
                    assert!(
                        elf.read_vaddr(0x40_0fff, 1, &mut slice_reader(&bytes))
                            .is_err()
                    );
                    assert!(
                        elf.read_vaddr(u64::MAX, 2, &mut slice_reader(&bytes))
                            .is_err()
                    );
                    // Too large for the caller's cap.
                    assert!(
                        elf.read_section(&data, 9, &mut slice_reader(&bytes))
                            .is_err()
                    );
                    // The file cut short inside the section.
                    let cut = &bytes[..data.offset as usize + 5];
                    assert!(elf.read_section(&data, 64, &mut slice_reader(cut)).is_err());
                }
            }
        }
    }

    #[test]
    fn header_edge_cases() {
        let good = build_elf(true, false, &[], false);
        assert!(parse_header(&good).is_ok());
        for n in 0..HEADER_READ_LEN {
            assert!(parse_header(&good[..n]).is_err(), "{n}");
        }
        let good32 = build_elf(false, true, &[], false);
        assert!(parse_header(&good32[..52]).is_ok());
        assert!(parse_header(&good32[..51]).is_err());
        let mut bad = good.clone();
        bad[4] = 3;
        assert!(parse_header(&bad).is_err());
        let mut bad = good.clone();
        bad[5] = 0;
        assert!(parse_header(&bad).is_err());
        assert!(parse_header(b"\x7fELG\x02\x01").is_err());
        assert!(parse_header(b"").is_err());

        // Non-standard entry sizes are refused rather than trusted.
        let mut h = parse_header(&good).unwrap();
        h.shentsize = 65535;
        assert!(h.section_table_range().is_err());
        assert!(parse_section_headers(&good, &h).is_empty());
        h.phentsize = 1;
        h.phoff = 64;
        h.phnum = 1;
        assert!(h.program_table_range().is_err());
        assert!(parse_program_headers(&good, &h).is_empty());
        // Offsets that overflow.
        let mut h = parse_header(&good).unwrap();
        h.shoff = u64::MAX - 10;
        assert!(h.section_table_range().is_err());
        // No table at all.
        h.shoff = 0;
        assert_eq!(h.section_table_range(), Ok(None));
    }

    #[test]
    fn names_and_lookups() {
        let strtab = b"\0.text\0.go.buildinfo\0.dep-v0\0unterminated";
        assert_eq!(section_name(strtab, 0), Some(&b""[..]));
        assert_eq!(section_name(strtab, 1), Some(&b".text"[..]));
        assert_eq!(section_name(strtab, 4), Some(&b"xt"[..]));
        assert_eq!(section_name(strtab, 7), Some(&b".go.buildinfo"[..]));
        assert_eq!(section_name(strtab, 29), None);
        assert_eq!(section_name(strtab, u32::MAX), None);
        let long = vec![b'a'; MAX_SECTION_NAME_LEN + 1];
        assert_eq!(section_name(&[&long[..], b"\0"].concat(), 0), None);
        let ok = vec![b'a'; MAX_SECTION_NAME_LEN];
        assert!(section_name(&[&ok[..], b"\0"].concat(), 0).is_some());
        let sec = |name_offset| Section {
            name_offset,
            ..Section::default()
        };
        let headers = [sec(u32::MAX), sec(29), sec(8), sec(7), sec(21)];
        assert_eq!(
            find_section(&headers, strtab, b".go.buildinfo"),
            Some(&headers[3])
        );
        assert_eq!(
            find_section(&headers, strtab, b".dep-v0"),
            Some(&headers[4])
        );
        assert_eq!(find_section(&headers, strtab, b"unterminated"), None);
        assert_eq!(find_section(&headers, &[], b".text"), None);
    }

    #[test]
    fn vaddr_translation() {
        let load = |vaddr, offset, filesz, memsz| ProgramHeader {
            ty: PT_LOAD,
            flags: 6,
            offset,
            vaddr,
            filesz,
            memsz,
        };
        let phdrs = [
            ProgramHeader {
                ty: 6,
                ..load(0, 0, u64::MAX, u64::MAX)
            },
            load(0x1000, 0x100, 0x100, 0x2000),
            load(u64::MAX - 4, 0x900, 100, 100),
        ];
        assert_eq!(vaddr_to_offset(&phdrs, 0x1000, 0x100), Some(0x100));
        assert_eq!(vaddr_to_offset(&phdrs, 0x1010, 0x10), Some(0x110));
        // The part of the segment past p_filesz is not in the file.
        assert_eq!(vaddr_to_offset(&phdrs, 0x10ff, 2), None);
        assert_eq!(vaddr_to_offset(&phdrs, 0x1100, 1), None);
        assert_eq!(vaddr_to_offset(&phdrs, 0xfff, 1), None);
        assert_eq!(vaddr_to_offset(&phdrs, u64::MAX, 1), None);
        assert_eq!(vaddr_to_offset(&phdrs, u64::MAX - 1, 1), None);
        assert_eq!(vaddr_to_offset(&[], 0, 0), None);
    }

    /// A header that claims extended numbering, followed by a table of
    /// `entries` junk section headers.
    fn junk_table(rng: &mut Rng, entries: usize, shnum: u64, strndx: u32) -> Vec<u8> {
        let mut bytes = build_elf(true, false, &[], false);
        bytes.truncate(64);
        bytes[40..48].copy_from_slice(&64u64.to_le_bytes()); // e_shoff
        bytes[60..62].copy_from_slice(&0u16.to_le_bytes()); // e_shnum
        bytes[62..64].copy_from_slice(&0xffffu16.to_le_bytes()); // e_shstrndx
        bytes[56..58].copy_from_slice(&0xffffu16.to_le_bytes()); // e_phnum
        bytes[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        bytes.extend(rng.bytes(entries * 64));
        bytes[64 + 32..64 + 40].copy_from_slice(&shnum.to_le_bytes()); // sh_size
        bytes[64 + 40..64 + 44].copy_from_slice(&strndx.to_le_bytes()); // sh_link
        bytes[64 + 44..64 + 48].copy_from_slice(&u32::MAX.to_le_bytes()); // sh_info
        bytes
    }

    #[test]
    fn hostile_tables() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let start = crate::parse::fuzz::CpuTimer::start();
        // 2^16 junk entries, and a section 0 that claims 2^64 - 1 of them.
        let bytes = junk_table(&mut rng, 1 << 16, u64::MAX, 70_000);
        let elf = ElfFile::read(&mut slice_reader(&bytes)).unwrap();
        assert_eq!(elf.sections.len(), MAX_SECTIONS);
        assert_eq!(elf.program_headers.len(), MAX_PROGRAM_HEADERS);
        assert!(elf.strtab.is_empty(), "index 70,000 is past the cap");
        assert_eq!(elf.find_section(b".go.buildinfo"), None);
        // The same, but with a string table index inside the junk: whatever
        // it points at, at most MAX_STRTAB_LEN bytes are read.
        let bytes = junk_table(&mut rng, 1 << 16, 1 << 16, 5);
        let total = Cell::new(0u64);
        let mut counted = {
            let mut inner = slice_reader(&bytes);
            move |off: u64, len: usize| {
                let got = inner(off, len)?;
                total.set(total.get() + got.len() as u64);
                Ok::<_, std::io::Error>(got)
            }
        };
        let elf = ElfFile::read(&mut counted).unwrap();
        assert_eq!(elf.sections.len(), 1 << 16);
        assert!(elf.strtab.len() <= MAX_STRTAB_LEN);
        let _ = elf.find_section(b".dep-v0");
        // A table past the end of the file, or at an overflowing offset.
        let mut bytes = build_elf(true, false, &[], false);
        bytes[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let elf = ElfFile::read(&mut slice_reader(&bytes)).unwrap();
        assert!(elf.sections.is_empty());
        bytes[40..48].copy_from_slice(&(u64::MAX - 100).to_le_bytes());
        let elf = ElfFile::read(&mut slice_reader(&bytes)).unwrap();
        assert!(elf.sections.is_empty());
        // A section whose contents lie past the end of the file.
        let mut bytes = build_elf(
            true,
            true,
            &[TestSection::progbits(b".x", 0, vec![1; 8])],
            false,
        );
        let elf = ElfFile::read(&mut slice_reader(&bytes)).unwrap();
        let mut s = *elf.find_section(b".x").unwrap();
        s.offset = bytes.len() as u64 + 10;
        assert!(elf.read_section(&s, 64, &mut slice_reader(&bytes)).is_err());
        s.offset = u64::MAX - 2;
        assert!(elf.read_section(&s, 64, &mut slice_reader(&bytes)).is_err());
        s.offset = 0;
        s.size = u64::MAX;
        assert!(elf.read_section(&s, 64, &mut slice_reader(&bytes)).is_err());
        // A truncated file at every length never panics.
        let len = bytes.len();
        for n in 0..len {
            bytes.truncate(n);
            let _ = ElfFile::read(&mut slice_reader(&bytes));
        }
        // 64 MiB of junk, with and without an ELF magic number in front.
        let mut junk = rng.bytes(64 << 20);
        assert!(ElfFile::read(&mut slice_reader(&junk)).is_err());
        junk[..6].copy_from_slice(b"\x7fELF\x02\x01");
        if let Ok(elf) = ElfFile::read(&mut slice_reader(&junk)) {
            assert!(elf.sections.len() <= MAX_SECTIONS);
            assert!(elf.strtab.len() <= MAX_STRTAB_LEN);
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
    }

    /// A failing `read_at` surfaces as `ReadError::Read`.
    #[test]
    fn read_errors_are_passed_through() {
        let mut failing =
            |_: u64, _: usize| -> std::io::Result<Vec<u8>> { Err(std::io::Error::other("boom")) };
        match ElfFile::read(&mut failing) {
            Err(ReadError::Read(e)) => assert_eq!(e.to_string(), "boom"),
            other => panic!("{other:?}"),
        }
        let err = ElfFile::read(&mut slice_reader(b"MZ")).unwrap_err();
        assert!(matches!(err, ReadError::Parse(_)));
        assert_eq!(err.to_string(), "malformed elf: not an ELF file");
        // A read_at that returns more than asked is cut down to size.
        let bytes = build_elf(
            true,
            false,
            &[TestSection::progbits(b".x", 0, vec![7; 8])],
            false,
        );
        let mut greedy =
            |off: u64, _: usize| Ok::<_, std::io::Error>(bytes[off as usize..].to_vec());
        let elf = ElfFile::read(&mut greedy).unwrap();
        let s = *elf.find_section(b".x").unwrap();
        assert_eq!(elf.read_section(&s, 64, &mut greedy).unwrap(), vec![7; 8]);
    }

    #[test]
    fn fuzz_no_panics() {
        let fixtures = [
            build_elf(
                true,
                false,
                &[TestSection {
                    load: Some(PF_W),
                    ..TestSection::progbits(b".go.buildinfo", 0x1000, vec![9; 40])
                }],
                false,
            ),
            build_elf(
                false,
                true,
                &[TestSection::progbits(b".dep-v0", 0, vec![1; 20])],
                true,
            ),
            build_elf(true, true, &[], true),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..4000 {
            let input = if i % 4 == 0 {
                let len = rng.below(400);
                let mut b = rng.bytes(len);
                if b.len() > 6 && rng.below(2) == 0 {
                    b[..6].copy_from_slice(b"\x7fELF\x02\x01");
                }
                b
            } else {
                let f = rng.below(fixtures.len());
                mutate(&mut rng, &fixtures[f])
            };
            let Ok(elf) = ElfFile::read(&mut slice_reader(&input)) else {
                continue;
            };
            assert!(elf.sections.len() <= MAX_SECTIONS);
            assert!(elf.program_headers.len() <= MAX_PROGRAM_HEADERS);
            for name in [&b".go.buildinfo"[..], b".dep-v0", b""] {
                if let Some(s) = elf.find_section(name)
                    && let Ok(data) = elf.read_section(s, 1 << 16, &mut slice_reader(&input))
                {
                    assert!(data.len() <= 1 << 16);
                }
            }
            for s in &elf.sections {
                let _ = section_name(&elf.strtab, s.name_offset);
            }
            let _ = elf.read_vaddr(
                rng.next() % 0x2000,
                rng.below(64),
                &mut slice_reader(&input),
            );
        }
    }
}
