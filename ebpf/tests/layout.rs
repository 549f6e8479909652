//! The Rust mirrors against the one C definition (ebpf/bpf/events.h), as the
//! compiler laid it out: struct sizes, member offsets and sizes are read from
//! the BTF of the checked-in object (`patchgap_ebpf::OBJECT`), and the names
//! the loader uses (programs, sections, maps, globals) from its symbol table.
//!
//! `ebpf/build.sh --check` (in CI) keeps the object in step with the C
//! sources, so this covers events.h itself.
//!
//! The ELF and BTF readers below are deliberately small: little-endian ELF64
//! section headers and symbols, and the BTF type section (the kernel's
//! Documentation/bpf/btf.rst), enough for structs, arrays, typedefs and enums.

use std::mem::{offset_of, size_of};

use patchgap_ebpf::*;

// ---- ELF ----

struct Section<'a> {
    name: &'a str,
    data: &'a [u8],
    link: u32,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn cstr_at(b: &[u8], off: usize) -> &str {
    let len = b[off..]
        .iter()
        .position(|&c| c == 0)
        .expect("unterminated string");
    std::str::from_utf8(&b[off..off + len]).expect("non-UTF-8 name")
}

fn sections(elf: &[u8]) -> Vec<Section<'_>> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    assert_eq!(u16_at(elf, 0x12), 247, "e_machine is not EM_BPF");
    let shoff = u64_at(elf, 0x28) as usize;
    let shentsize = u16_at(elf, 0x3A) as usize;
    let shnum = u16_at(elf, 0x3C) as usize;
    let shstrndx = u16_at(elf, 0x3E) as usize;
    let header = |i: usize| &elf[shoff + i * shentsize..shoff + (i + 1) * shentsize];
    let body = |h: &[u8]| {
        let (off, size) = (u64_at(h, 24) as usize, u64_at(h, 32) as usize);
        // SHT_NOBITS (.bss) has a size but no bytes in the file.
        if u32_at(h, 4) == 8 {
            &elf[0..0]
        } else {
            &elf[off..off + size]
        }
    };
    let shstrtab = body(header(shstrndx));
    (0..shnum)
        .map(|i| {
            let h = header(i);
            Section {
                name: cstr_at(shstrtab, u32_at(h, 0) as usize),
                data: body(h),
                link: u32_at(h, 40),
            }
        })
        .collect()
}

fn section<'a, 'b>(secs: &'b [Section<'a>], name: &str) -> &'b Section<'a> {
    secs.iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no section {name} in the object"))
}

const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;

struct Symbol<'a> {
    name: &'a str,
    kind: u8,
    section: &'a str,
    size: u64,
}

fn symbols<'a>(secs: &[Section<'a>]) -> Vec<Symbol<'a>> {
    let symtab = section(secs, ".symtab");
    let strtab = secs[symtab.link as usize].data;
    symtab
        .data
        .chunks_exact(24)
        .map(|e| Symbol {
            name: cstr_at(strtab, u32_at(e, 0) as usize),
            kind: e[4] & 0xf,
            section: secs.get(u16_at(e, 6) as usize).map_or("", |s| s.name),
            size: u64_at(e, 16),
        })
        .collect()
}

// ---- BTF ----

const BTF_KIND_PTR: u32 = 2;
const BTF_KIND_ARRAY: u32 = 3;
const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_ENUM: u32 = 6;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_VOLATILE: u32 = 9;
const BTF_KIND_CONST: u32 = 10;
const BTF_KIND_RESTRICT: u32 = 11;
const BTF_KIND_DATASEC: u32 = 15;
const BTF_KIND_TYPE_TAG: u32 = 18;

struct BtfType<'a> {
    name: &'a str,
    kind: u32,
    kind_flag: bool,
    /// `size` for INT, STRUCT, UNION, ENUM; `type` for PTR, TYPEDEF, CONST, ...
    size_or_type: u32,
    /// The kind-specific data after the 12-byte common header.
    extra: &'a [u8],
}

struct Btf<'a> {
    /// Indexed by type id; id 0 is void.
    types: Vec<Option<BtfType<'a>>>,
    strings: &'a [u8],
}

/// A struct's size and its fields as (name, byte offset, byte size), in
/// declaration (= offset) order.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    size: usize,
    fields: Vec<(String, usize, usize)>,
}

impl<'a> Btf<'a> {
    fn parse(b: &'a [u8]) -> Self {
        assert_eq!(u16_at(b, 0), 0xEB9F, "bad BTF magic");
        let hdr_len = u32_at(b, 4) as usize;
        let (type_off, type_len) = (u32_at(b, 8) as usize, u32_at(b, 12) as usize);
        let (str_off, str_len) = (u32_at(b, 16) as usize, u32_at(b, 20) as usize);
        let data = &b[hdr_len + type_off..hdr_len + type_off + type_len];
        let strings = &b[hdr_len + str_off..hdr_len + str_off + str_len];
        let mut types = vec![None];
        let mut at = 0;
        while at < data.len() {
            let info = u32_at(data, at + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra_len = match kind {
                1 => 4,                    // INT
                3 => 12,                   // ARRAY
                4 | 5 => 12 * vlen,        // STRUCT, UNION
                6 => 8 * vlen,             // ENUM
                13 => 8 * vlen,            // FUNC_PROTO
                14 => 4,                   // VAR
                15 => 12 * vlen,           // DATASEC
                17 => 4,                   // DECL_TAG
                19 => 12 * vlen,           // ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                _ => panic!("unknown BTF kind {kind}"),
            };
            types.push(Some(BtfType {
                name: cstr_at(strings, u32_at(data, at) as usize),
                kind,
                kind_flag: info >> 31 == 1,
                size_or_type: u32_at(data, at + 8),
                extra: &data[at + 12..at + 12 + extra_len],
            }));
            at += 12 + extra_len;
        }
        Btf { types, strings }
    }

    fn ty(&self, id: u32) -> &BtfType<'a> {
        self.types[id as usize]
            .as_ref()
            .expect("type id 0 (void) has no layout")
    }

    fn find(&self, kind: u32, name: &str) -> &BtfType<'a> {
        let found: Vec<_> = self
            .types
            .iter()
            .flatten()
            .filter(|t| t.kind == kind && t.name == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "BTF type {name} (kind {kind}) found {} times in the object",
            found.len()
        );
        found[0]
    }

    fn size_of(&self, id: u32) -> usize {
        let t = self.ty(id);
        match t.kind {
            BTF_KIND_PTR => 8,
            BTF_KIND_ARRAY => u32_at(t.extra, 8) as usize * self.size_of(u32_at(t.extra, 0)),
            BTF_KIND_TYPEDEF | BTF_KIND_VOLATILE | BTF_KIND_CONST | BTF_KIND_RESTRICT
            | BTF_KIND_TYPE_TAG => self.size_of(t.size_or_type),
            _ => t.size_or_type as usize,
        }
    }

    fn struct_layout(&self, name: &str) -> Layout {
        let t = self.find(BTF_KIND_STRUCT, name);
        let fields = t
            .extra
            .chunks_exact(12)
            .map(|m| {
                let member = cstr_at(self.strings, u32_at(m, 0) as usize).to_string();
                let offset = u32_at(m, 8);
                // With kind_flag set, the top 8 bits are a bitfield's size.
                let (bits, bitfield) = if t.kind_flag {
                    (offset & 0xff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                assert_eq!(bitfield, 0, "{name}.{member}: a bitfield");
                assert_eq!(bits % 8, 0, "{name}.{member}: not byte-aligned");
                (member, bits as usize / 8, self.size_of(u32_at(m, 4)))
            })
            .collect();
        Layout {
            size: t.size_or_type as usize,
            fields,
        }
    }

    fn enum_values(&self, name: &str) -> Vec<(String, i64)> {
        let t = self.find(BTF_KIND_ENUM, name);
        t.extra
            .chunks_exact(8)
            .map(|v| {
                let name = cstr_at(self.strings, u32_at(v, 0) as usize).to_string();
                (name, i64::from(u32_at(v, 4) as i32))
            })
            .collect()
    }
}

// ---- Rust side ----

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// The layout of a Rust struct, listing its fields; the destructuring makes
/// the list exhaustive (a field added to the struct but not here does not
/// compile).
macro_rules! rust_layout {
    ($ty:ident { $($field:ident),* $(,)? }) => {{
        #[allow(dead_code)]
        fn exhaustive(v: &$ty) {
            let $ty { $($field: _),* } = v;
        }
        let mut fields = vec![$((
            stringify!($field).to_string(),
            offset_of!($ty, $field),
            field_size::<$ty, _>(|v| &v.$field),
        )),*];
        fields.sort_by_key(|f| f.1);
        Layout { size: size_of::<$ty>(), fields }
    }};
}

fn object_btf() -> Btf<'static> {
    let secs = sections(OBJECT);
    Btf::parse(section(&secs, ".BTF").data)
}

fn contain_btf() -> Btf<'static> {
    let secs = sections(CONTAIN_OBJECT);
    Btf::parse(section(&secs, ".BTF").data)
}

fn assert_same(c_name: &str, rust: Layout) {
    assert_same_in(&object_btf(), c_name, rust);
}

fn assert_same_in(btf: &Btf<'_>, c_name: &str, rust: Layout) {
    let c = btf.struct_layout(c_name);
    assert_eq!(
        rust, c,
        "struct {c_name}: the Rust mirror (left) differs from the C layout in the object's BTF (right)"
    );
    // Belt and braces: no implicit padding on the Rust side either.
    let covered: usize = rust.fields.iter().map(|f| f.2).sum();
    assert_eq!(covered, rust.size, "{c_name}: implicit padding");
}

#[test]
fn event_header_matches_c() {
    assert_same(
        "pg_event_header",
        rust_layout!(EventHeader {
            kind,
            pid,
            tid,
            ppid,
            ts_ns,
            cgroup_id,
            uid,
            _pad0,
            comm,
            start_ns
        }),
    );
}

#[test]
fn exec_event_matches_c() {
    assert_same(
        "pg_exec_event",
        rust_layout!(ExecEvent {
            h,
            exe,
            filename_len,
            args_len,
            args_total,
            _pad0,
            filename,
            args
        }),
    );
}

#[test]
fn exit_event_matches_c() {
    assert_same(
        "pg_exit_event",
        rust_layout!(ExitEvent {
            h,
            exit_code,
            _pad0
        }),
    );
}

#[test]
fn connect_event_matches_c() {
    assert_same(
        "pg_connect_event",
        rust_layout!(ConnectEvent {
            h,
            family,
            port,
            sock_type,
            _pad0,
            ret,
            repeats,
            addr
        }),
    );
}

#[test]
fn open_event_matches_c() {
    assert_same(
        "pg_open_event",
        rust_layout!(OpenEvent {
            h,
            ret,
            flags,
            path_len,
            _pad0,
            file,
            path
        }),
    );
}

#[test]
fn map_event_matches_c() {
    assert_same("pg_map_event", rust_layout!(MapEvent { h, fd, prot, file }));
}

#[test]
fn file_identity_matches_c() {
    assert_same(
        "pg_file_id",
        rust_layout!(FileIdentity {
            ino,
            ctime_sec,
            ctime_nsec,
            dev,
            root_ino,
            root_dev,
            _pad0
        }),
    );
}

#[test]
fn dns_event_matches_c() {
    assert_same(
        "pg_dns_event",
        rust_layout!(DnsEvent {
            h,
            family,
            proto,
            payload_len,
            payload_total,
            _pad0,
            saddr,
            payload
        }),
    );
}

#[test]
fn kinds_match_c() {
    let want: Vec<(String, i64)> = [
        ("PG_EVENT_EXEC", EVENT_EXEC),
        ("PG_EVENT_EXIT", EVENT_EXIT),
        ("PG_EVENT_CONNECT", EVENT_CONNECT),
        ("PG_EVENT_OPEN", EVENT_OPEN),
        ("PG_EVENT_MAP", EVENT_MAP),
        ("PG_EVENT_DNS", EVENT_DNS),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), i64::from(*v)))
    .collect();
    assert_eq!(object_btf().enum_values("pg_event_kind"), want);
    assert_eq!(
        [
            ExecEvent::KIND,
            ExitEvent::KIND,
            ConnectEvent::KIND,
            OpenEvent::KIND,
            MapEvent::KIND,
            DnsEvent::KIND
        ],
        [
            EVENT_EXEC,
            EVENT_EXIT,
            EVENT_CONNECT,
            EVENT_OPEN,
            EVENT_MAP,
            EVENT_DNS
        ]
    );
}

#[test]
fn programs_maps_and_globals_exist() {
    let secs = sections(OBJECT);
    let syms = symbols(&secs);
    let sym = |name: &str| {
        syms.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no symbol {name} in the object"))
    };

    let mut names: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), PROGRAMS.len(), "duplicate program names");
    for p in PROGRAMS {
        let s = sym(p.name);
        assert_eq!(s.kind, STT_FUNC, "{} is not a function", p.name);
        // aya (and libbpf) take the program type and the default attach point
        // from the section name.
        assert_eq!(
            s.section,
            format!("tracepoint/{}/{}", p.category, p.tracepoint),
            "{}: section",
            p.name
        );
    }
    // The one program that is not a tracepoint: DNS answers.
    let dns = sym(PROG_DNS);
    assert_eq!(
        (dns.kind, dns.section),
        (STT_FUNC, "cgroup_skb/ingress"),
        "{PROG_DNS}"
    );
    // The cgroup counter: a tracepoint program attached to several.
    let cgroup = sym(PROG_CGROUP_CHANGE);
    assert_eq!(
        (cgroup.kind, cgroup.section),
        (STT_FUNC, "tracepoint/cgroup/cgroup_attach_task"),
        "{PROG_CGROUP_CHANGE}"
    );
    assert_eq!(CGROUP_CHANGE_TRACEPOINTS[0], "cgroup_attach_task");
    // Every other program in the object is listed.
    let in_object = syms
        .iter()
        .filter(|s| {
            s.kind == STT_FUNC
                && s.section.starts_with("tracepoint/")
                && s.name != PROG_CGROUP_CHANGE
        })
        .count();
    assert_eq!(
        in_object,
        PROGRAMS.len(),
        "programs in the object vs PROGRAMS"
    );

    for m in [
        MAP_EVENTS,
        MAP_LOST,
        MAP_CGROUP_CHANGES,
        MAP_CONNECT_START,
        MAP_OPEN_START,
        MAP_OPEN_SCRATCH,
        MAP_LIB_FDS,
    ] {
        let s = sym(m);
        assert_eq!((s.kind, s.section), (STT_OBJECT, ".maps"), "map {m}");
    }
    for g in [
        GLOBAL_SELF_TGID,
        GLOBAL_ENABLE_OPENS,
        GLOBAL_ENABLE_CONNECTS,
    ] {
        let s = sym(g);
        assert_eq!(
            (s.kind, s.section, s.size),
            (STT_OBJECT, ".rodata", 4),
            "global {g} (a const volatile u32)"
        );
    }
    // What the kernel needs for GPL-only helpers (bpf_probe_read_kernel).
    assert_eq!(section(&secs, "license").data, b"GPL\0");
    // aya needs the BTF extension (CO-RE relocations); strip must keep it.
    section(&secs, ".BTF.ext");
}

/// A BTF-defined map's max_entries: `int (*max_entries)[N]` in its
/// definition is a pointer to an array of N.
fn map_max_entries(btf: &Btf<'_>, map: &str) -> u32 {
    let maps = btf.find(BTF_KIND_DATASEC, ".maps");
    let var = maps
        .extra
        .chunks_exact(12)
        .map(|v| btf.ty(u32_at(v, 0)))
        .find(|v| v.name == map)
        .unwrap_or_else(|| panic!("no map {map} in .maps"));
    let def = btf.ty(var.size_or_type);
    def.extra
        .chunks_exact(12)
        .find(|m| cstr_at(btf.strings, u32_at(m, 0) as usize) == "max_entries")
        .map(|m| {
            let ptr = btf.ty(u32_at(m, 4));
            assert_eq!(ptr.kind, BTF_KIND_PTR);
            let arr = btf.ty(ptr.size_or_type);
            assert_eq!(arr.kind, BTF_KIND_ARRAY);
            u32_at(arr.extra, 8)
        })
        .unwrap_or_else(|| panic!("{map} has no max_entries"))
}

#[test]
fn events_default_size_matches_object() {
    assert_eq!(
        map_max_entries(&object_btf(), MAP_EVENTS),
        EVENTS_DEFAULT_BYTES
    );
}

// ---- The isolation object (contain.bpf.o) ----

#[test]
fn contain_structs_match_c() {
    use patchgap_ebpf::contain::*;
    let btf = contain_btf();
    assert_same_in(
        &btf,
        "pg_contain_config",
        rust_layout!(Config { mode, _pad0 }),
    );
    assert_same_in(
        &btf,
        "pg_contain_counters",
        rust_layout!(Counters {
            blocked_connects,
            blocked_packets,
            would_block_connects,
            would_block_packets,
            first_block_ns,
            first_would_block_ns
        }),
    );
    assert_same_in(
        &btf,
        "pg_contain_v4_key",
        rust_layout!(V4Key { prefixlen, addr }),
    );
    assert_same_in(
        &btf,
        "pg_contain_v6_key",
        rust_layout!(V6Key { prefixlen, addr }),
    );
    assert_same_in(&btf, "pg_contain_spec", rust_layout!(Spec { json }));
    let modes: Vec<(String, i64)> = [
        ("PG_CONTAIN_SHADOW", MODE_SHADOW),
        ("PG_CONTAIN_ENFORCE", MODE_ENFORCE),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), i64::from(*v)))
    .collect();
    assert_eq!(btf.enum_values("pg_contain_mode"), modes);
    for map in [MAP_ALLOW4, MAP_ALLOW6] {
        assert_eq!(map_max_entries(&btf, map) as usize, ALLOW_MAX, "{map}");
    }
    for map in [MAP_CONFIG, MAP_COUNTERS, MAP_SPEC] {
        assert_eq!(map_max_entries(&btf, map), 1, "{map}: one entry");
    }
}

#[test]
fn contain_programs_and_maps_exist() {
    use patchgap_ebpf::contain::*;
    let secs = sections(CONTAIN_OBJECT);
    let syms = symbols(&secs);
    let sym = |name: &str| {
        syms.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no symbol {name} in contain.bpf.o"))
    };
    // aya takes the program type and the attach type from the section.
    for (prog, section) in [
        (PROG_EGRESS, "cgroup_skb/egress"),
        (PROG_CONNECT4, "cgroup/connect4"),
        (PROG_CONNECT6, "cgroup/connect6"),
    ] {
        let s = sym(prog);
        assert_eq!((s.kind, s.section), (STT_FUNC, section), "{prog}");
        // The kernel keeps 15 bytes of a program's name; bpftool shows those.
        assert!(
            prog.len() <= 15,
            "{prog}: name longer than the kernel keeps"
        );
    }
    let in_object = syms
        .iter()
        .filter(|s| s.kind == STT_FUNC && s.section.starts_with("cgroup"))
        .count();
    assert_eq!(
        in_object,
        PROGRAMS.len(),
        "programs in the object vs PROGRAMS"
    );
    for m in MAPS {
        let s = sym(m);
        assert_eq!((s.kind, s.section), (STT_OBJECT, ".maps"), "map {m}");
        assert!(m.len() <= 15, "{m}: name longer than the kernel keeps");
    }
    assert_eq!(section(&secs, "license").data, b"GPL\0");
    section(&secs, ".BTF.ext");
}
