//! The update bundle: a signed header, then the image (one UKI).
//!
//! ```text
//! "MXBUNDL1"                      8 bytes, format 1
//! manifest length                 u32 big-endian, at most MANIFEST_MAX
//! manifest                        JSON (board, version, payload size and SHA-256)
//! signature                       64 bytes: Ed25519 over all bytes above
//! payload                         exactly payload_size bytes, nothing after
//! ```
//!
//! The signature covers the manifest, and the manifest names the payload's
//! SHA-256, so one signature check before the payload is read decides
//! whether the bundle is trusted; the payload is then hashed while it is
//! copied and only made bootable when the hash matches. The payload is
//! never held in memory whole: a reader is enough (a file, stdin).
//!
//! Ed25519 (RFC 8032) through ring, which the TLS stack already carries.
//! A key file holds a PKCS#8 document (the private key) or the 32-byte
//! public key, base64 on one line after a tag naming what it is.

use crate::UpdateError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;

/// A signing key (Ed25519, from a PKCS#8 document).
pub type SigningKey = Ed25519KeyPair;

pub const MAGIC: &[u8; 8] = b"MXBUNDL1";
/// A manifest is a few hundred bytes; anything far larger is not ours.
pub const MANIFEST_MAX: usize = 64 * 1024;
/// The largest image accepted. Today's UKI is about 23 MiB; the EFI system
/// partition (256 MiB, board/*/genimage.cfg) holds two images and one
/// being written.
pub const PAYLOAD_MAX: u64 = 64 * 1024 * 1024;
pub const SIGNATURE_LEN: usize = 64;
/// The `.osrel` section read from a UKI, at most.
const OSREL_MAX: usize = 16 * 1024;

const PUBLIC_TAG: &str = "mxrack-update-ed25519-public";
const PRIVATE_TAG: &str = "mxrack-update-ed25519-private";

/// What the signature vouches for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The board the image is for (`qemu-x86_64`, `x86_64`).
    pub board: String,
    /// The image's version, as its `.osrel` IMAGE_VERSION says (dotted
    /// numbers: systemd-boot sorts by it).
    pub version: String,
    /// The source revision it was built from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub payload_size: u64,
    /// Lower-case hex.
    pub payload_sha256: String,
    /// The signing key's id ([`key_id`]), so a refusal can name it.
    pub key_id: String,
}

/// A trusted public key and where it came from.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub bytes: [u8; 32],
    pub origin: String,
}

impl PublicKey {
    pub fn id(&self) -> String {
        key_id(&self.bytes)
    }
}

/// A short name of a public key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(public: &[u8]) -> String {
    hex(&ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new signing key: (private key file text, public key file text).
pub fn keygen() -> Result<(String, String), UpdateError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| UpdateError::Key("cannot generate an Ed25519 key".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| UpdateError::Key("generated key does not parse".into()))?;
    let private = format!("{PRIVATE_TAG} {}\n", B64.encode(pkcs8.as_ref()));
    let public = public_text(pair.public_key().as_ref());
    Ok((private, public))
}

fn public_text(public: &[u8]) -> String {
    format!("{PUBLIC_TAG} {}\n", B64.encode(public))
}

fn tagged<'a>(text: &'a str, tag: &str, what: &str) -> Result<&'a str, UpdateError> {
    let line = text.trim();
    let rest = line
        .strip_prefix(tag)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| {
            UpdateError::Key(format!("{what}: expected a line starting with {tag:?}"))
        })?;
    Ok(rest.trim())
}

/// A signing key from its file text.
pub fn signing_key(text: &str, origin: &str) -> Result<Ed25519KeyPair, UpdateError> {
    let b64 = tagged(text, PRIVATE_TAG, origin)?;
    let der = B64
        .decode(b64)
        .map_err(|_| UpdateError::Key(format!("{origin}: not base64")))?;
    Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|_| UpdateError::Key(format!("{origin}: not an Ed25519 PKCS#8 key")))
}

/// The public key file text of a signing key.
pub fn public_of(key: &Ed25519KeyPair) -> String {
    public_text(key.public_key().as_ref())
}

/// A public key from its file text.
pub fn public_key(text: &str, origin: &str) -> Result<PublicKey, UpdateError> {
    let b64 = tagged(text, PUBLIC_TAG, origin)?;
    let raw = B64
        .decode(b64)
        .map_err(|_| UpdateError::Key(format!("{origin}: not base64")))?;
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| UpdateError::Key(format!("{origin}: an Ed25519 public key has 32 bytes")))?;
    Ok(PublicKey {
        bytes,
        origin: origin.to_string(),
    })
}

/// Every `*.pub` key in `dir` (the image's keyring). At most 64 keys of at
/// most 4 KiB each are read.
pub fn load_keyring(dir: &Path) -> Result<Vec<PublicKey>, UpdateError> {
    let rd =
        std::fs::read_dir(dir).map_err(UpdateError::io(format!("keyring {}", dir.display())))?;
    let mut keys = Vec::new();
    let mut names: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    names.sort();
    for p in names.into_iter().take(64) {
        let mut text = String::new();
        std::fs::File::open(&p)
            .and_then(|f| f.take(4096).read_to_string(&mut text))
            .map_err(UpdateError::io(p.display().to_string()))?;
        keys.push(public_key(&text, &p.display().to_string())?);
    }
    if keys.is_empty() {
        return Err(UpdateError::Key(format!(
            "no trusted update key (*.pub) in {}",
            dir.display()
        )));
    }
    Ok(keys)
}

/// The header bytes the signature covers.
fn header(manifest_json: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(12 + manifest_json.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(manifest_json.len() as u32).to_be_bytes());
    h.extend_from_slice(manifest_json);
    h
}

/// Writes a bundle of `payload` (a UKI, read whole: this runs on the build
/// host) for `board`/`version`, signed with `key`.
pub fn write_bundle(
    out: &mut impl Write,
    payload: &[u8],
    board: &str,
    version: &str,
    revision: Option<&str>,
    key: &Ed25519KeyPair,
) -> Result<Manifest, UpdateError> {
    if !crate::entries::valid_version(version) {
        return Err(UpdateError::Refused(format!(
            "version {version:?}: dotted numbers expected (systemd-boot sorts by them)"
        )));
    }
    if payload.len() as u64 > PAYLOAD_MAX {
        return Err(UpdateError::Refused(format!(
            "image of {} bytes is larger than {PAYLOAD_MAX}",
            payload.len()
        )));
    }
    let manifest = Manifest {
        format: 1,
        board: board.to_string(),
        version: version.to_string(),
        revision: revision.map(str::to_string),
        payload_size: payload.len() as u64,
        payload_sha256: hex(ring::digest::digest(&ring::digest::SHA256, payload).as_ref()),
        key_id: key_id(key.public_key().as_ref()),
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| UpdateError::Format(e.to_string()))?;
    let h = header(&json);
    let sig = key.sign(&h);
    let w = |r: std::io::Result<()>| r.map_err(UpdateError::io("writing the bundle"));
    w(out.write_all(&h))?;
    w(out.write_all(sig.as_ref()))?;
    w(out.write_all(payload))?;
    w(out.flush())?;
    Ok(manifest)
}

/// A bundle whose header was read and whose signature was checked; its
/// payload is still to be read from the same reader.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    /// The trusted key that signed it.
    pub signer: String,
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), UpdateError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            UpdateError::Format(format!("it ends inside the {what}"))
        } else {
            UpdateError::Io {
                what: "reading the bundle".into(),
                err: e,
            }
        }
    })
}

/// Reads the header and checks its signature against `keys`. Nothing of
/// the manifest is believed before the signature matched.
pub fn read_header(r: &mut impl Read, keys: &[PublicKey]) -> Result<Verified, UpdateError> {
    let mut magic = [0u8; 8];
    read_exact_or(r, &mut magic, "magic")?;
    if &magic != MAGIC {
        return Err(UpdateError::Format(
            "wrong magic (expected MXBUNDL1)".into(),
        ));
    }
    let mut len = [0u8; 4];
    read_exact_or(r, &mut len, "header")?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MANIFEST_MAX {
        return Err(UpdateError::Format(format!("manifest of {len} bytes")));
    }
    let mut json = vec![0u8; len];
    read_exact_or(r, &mut json, "manifest")?;
    let mut sig = [0u8; SIGNATURE_LEN];
    read_exact_or(r, &mut sig, "signature")?;
    let h = header(&json);
    let signer = keys
        .iter()
        .find(|k| {
            signature::UnparsedPublicKey::new(&signature::ED25519, &k.bytes)
                .verify(&h, &sig)
                .is_ok()
        })
        .ok_or_else(|| {
            // The claimed key id is only a hint for the operator: it is
            // not signed by anything we trust.
            let claimed = serde_json::from_slice::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v.get("key_id").and_then(|k| k.as_str()).map(str::to_string))
                // Unsigned text reaches a terminal: only a key id's shape.
                .filter(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_else(|| "?".into());
            UpdateError::Signature(format!(
                "not signed by a trusted key (the bundle names key {claimed}; trusted: {})",
                keys.iter()
                    .map(PublicKey::id)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| UpdateError::Format(format!("manifest: {e}")))?;
    if manifest.format != 1 {
        return Err(UpdateError::Format(format!(
            "format {} (this firmware reads 1)",
            manifest.format
        )));
    }
    if manifest.payload_size == 0 || manifest.payload_size > PAYLOAD_MAX {
        return Err(UpdateError::Format(format!(
            "image of {} bytes",
            manifest.payload_size
        )));
    }
    if !crate::entries::valid_version(&manifest.version) {
        return Err(UpdateError::Format(format!(
            "version {:?}",
            manifest.version
        )));
    }
    Ok(Verified {
        manifest,
        signer: signer.origin.clone(),
    })
}

/// Copies the payload to `out` while hashing it; fails (after the copy)
/// when its size or hash differ from the signed manifest, or when anything
/// follows it. The caller makes `out` bootable only on success.
pub fn copy_payload(
    r: &mut impl Read,
    out: &mut impl Write,
    manifest: &Manifest,
) -> Result<(), UpdateError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = manifest.payload_size;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = r
            .read(&mut buf[..want])
            .map_err(UpdateError::io("reading the bundle"))?;
        if n == 0 {
            return Err(UpdateError::Format(format!(
                "the image ends {left} bytes early (truncated download?)"
            )));
        }
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(UpdateError::io("writing the image"))?;
        left -= n as u64;
    }
    let mut extra = [0u8; 1];
    let after = r
        .read(&mut extra)
        .map_err(UpdateError::io("reading the bundle"))?;
    if after != 0 {
        return Err(UpdateError::Format("bytes follow the image".into()));
    }
    let got = hex(ctx.finish().as_ref());
    if got != manifest.payload_sha256 {
        return Err(UpdateError::Signature(format!(
            "the image's SHA-256 is {got}, the signed manifest says {}",
            manifest.payload_sha256
        )));
    }
    Ok(())
}

/// The `.osrel` section (os-release text) of a PE file: a UKI names its
/// version and board there, and systemd-boot sorts entries by it.
pub fn osrel_of(pe: &[u8]) -> Result<String, UpdateError> {
    let bad = |why: &str| UpdateError::Format(format!("not a unified kernel image: {why}"));
    let u16_at = |o: usize| pe.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        pe.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if pe.get(..2) != Some(b"MZ") {
        return Err(bad("no MZ header"));
    }
    let pe_off = u32_at(0x3c).ok_or_else(|| bad("short"))? as usize;
    if pe.get(pe_off..pe_off + 4) != Some(b"PE\0\0") {
        return Err(bad("no PE signature"));
    }
    let coff = pe_off + 4;
    let sections = u16_at(coff + 2).ok_or_else(|| bad("short"))? as usize;
    let opt_size = u16_at(coff + 16).ok_or_else(|| bad("short"))? as usize;
    let table = coff + 20 + opt_size;
    for i in 0..sections.min(96) {
        let s = table + i * 40;
        let name = pe
            .get(s..s + 8)
            .ok_or_else(|| bad("section table cut short"))?;
        if name != b".osrel\0\0" {
            continue;
        }
        let vsize = u32_at(s + 8).ok_or_else(|| bad("short"))? as usize;
        let raw_size = u32_at(s + 16).ok_or_else(|| bad("short"))? as usize;
        let raw_ptr = u32_at(s + 20).ok_or_else(|| bad("short"))? as usize;
        let size = vsize.min(raw_size).min(OSREL_MAX);
        let bytes = pe
            .get(raw_ptr..raw_ptr.saturating_add(size))
            .ok_or_else(|| bad(".osrel outside the file"))?;
        let text = String::from_utf8_lossy(bytes);
        return Ok(text.trim_end_matches('\0').to_string());
    }
    Err(bad("no .osrel section"))
}

/// A value of an os-release text (quotes removed).
pub fn osrel_value(osrel: &str, key: &str) -> Option<String> {
    osrel.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// The `.osrel` of an image file, read from its first [`OSREL_SCAN`]
/// bytes (objcopy puts it right after the stub's own sections).
pub fn osrel_of_file(path: &Path) -> Result<String, UpdateError> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(OSREL_SCAN).read_to_end(&mut head))
        .map_err(UpdateError::io(format!("reading {}", path.display())))?;
    osrel_of(&head)
}

/// How much of an image is read to find its `.osrel`.
const OSREL_SCAN: u64 = 2 * 1024 * 1024;

#[cfg(test)]
pub(crate) mod testutil {
    /// A minimal PE with one `.osrel` section, as objcopy lays it out.
    pub fn pe_with_osrel(osrel: &[u8]) -> Vec<u8> {
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x86..0x88].copy_from_slice(&1u16.to_le_bytes()); // sections
        pe[0x94..0x96].copy_from_slice(&0u16.to_le_bytes()); // optional header
        let s = 0x84 + 20;
        pe[s..s + 8].copy_from_slice(b".osrel\0\0");
        pe[s + 8..s + 12].copy_from_slice(&(osrel.len() as u32).to_le_bytes());
        pe[s + 16..s + 20].copy_from_slice(&(osrel.len() as u32).to_le_bytes());
        pe[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes());
        pe.extend_from_slice(osrel);
        pe
    }

    /// An image as image/build makes it: its .osrel names version and board.
    pub fn image(version: &str, board: &str) -> Vec<u8> {
        pe_with_osrel(
            format!("ID=mxrack\nIMAGE_VERSION={version}\nMXRACK_BOARD={board}\n").as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::pe_with_osrel;
    use super::*;

    fn keys() -> (Ed25519KeyPair, Vec<PublicKey>) {
        let (private, public) = keygen().expect("keygen");
        let k = signing_key(&private, "test.key").expect("parse");
        assert_eq!(public_of(&k), public);
        (k, vec![public_key(&public, "test.pub").expect("pub")])
    }

    fn bundle(key: &Ed25519KeyPair, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_bundle(
            &mut out,
            payload,
            "qemu-x86_64",
            "0.1.0.20261204",
            Some("abc"),
            key,
        )
        .expect("write");
        out
    }

    #[test]
    fn a_signed_bundle_verifies_and_copies() {
        let (k, trusted) = keys();
        let data = bundle(&k, b"the image");
        let mut r = &data[..];
        let v = read_header(&mut r, &trusted).expect("verified");
        assert_eq!(v.manifest.version, "0.1.0.20261204");
        assert_eq!(v.signer, "test.pub");
        let mut out = Vec::new();
        copy_payload(&mut r, &mut out, &v.manifest).expect("copied");
        assert_eq!(out, b"the image");
    }

    #[test]
    fn another_key_is_refused() {
        let (k, _) = keys();
        let (_, other) = keys();
        let data = bundle(&k, b"the image");
        let e = read_header(&mut &data[..], &other).unwrap_err();
        assert!(matches!(e, UpdateError::Signature(_)), "{e}");
        assert!(
            e.to_string().contains(&key_id(k.public_key().as_ref())),
            "{e}"
        );
    }

    #[test]
    fn a_changed_manifest_byte_is_refused() {
        let (k, trusted) = keys();
        let mut data = bundle(&k, b"the image");
        let at = data.windows(6).position(|w| w == b"qemu-x").expect("board") + 1;
        data[at] = b'X';
        let e = read_header(&mut &data[..], &trusted).unwrap_err();
        assert!(matches!(e, UpdateError::Signature(_)), "{e}");
    }

    #[test]
    fn a_changed_payload_byte_is_refused_after_the_copy() {
        let (k, trusted) = keys();
        let mut data = bundle(&k, b"the image");
        let last = data.len() - 1;
        data[last] ^= 1;
        let mut r = &data[..];
        let v = read_header(&mut r, &trusted).expect("header is fine");
        let e = copy_payload(&mut r, &mut Vec::new(), &v.manifest).unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
    }

    #[test]
    fn truncated_and_trailing_bytes_are_refused() {
        let (k, trusted) = keys();
        let data = bundle(&k, b"the image");
        let mut short = &data[..data.len() - 2];
        let v = read_header(&mut short, &trusted).expect("header");
        let e = copy_payload(&mut short, &mut Vec::new(), &v.manifest).unwrap_err();
        assert!(e.to_string().contains("early"), "{e}");
        let mut long = data.clone();
        long.push(0);
        let mut r = &long[..];
        let v = read_header(&mut r, &trusted).expect("header");
        let e = copy_payload(&mut r, &mut Vec::new(), &v.manifest).unwrap_err();
        assert!(e.to_string().contains("follow"), "{e}");
        for cut in [0, 5, 11, 40] {
            assert!(
                read_header(&mut &data[..cut], &trusted).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn garbage_is_not_a_bundle() {
        let (_, trusted) = keys();
        let e = read_header(&mut &b"MZ\x90\0not a bundle at all"[..], &trusted).unwrap_err();
        assert!(matches!(e, UpdateError::Format(_)), "{e}");
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read_header(&mut &huge[..], &trusted).unwrap_err();
        assert!(e.to_string().contains("manifest of"), "{e}");
    }

    #[test]
    fn key_files_are_checked() {
        assert!(public_key("ssh-ed25519 AAAA", "x").is_err());
        assert!(public_key(&format!("{PUBLIC_TAG} AAAA"), "x").is_err());
        assert!(signing_key(&format!("{PRIVATE_TAG} !!"), "x").is_err());
    }

    #[test]
    fn osrel_is_read_from_a_pe() {
        let pe = pe_with_osrel(b"ID=mxrack\nIMAGE_VERSION=\"0.1.0.7\"\nMXRACK_BOARD=x86_64\n\0");
        let text = osrel_of(&pe).expect("osrel");
        assert_eq!(
            osrel_value(&text, "IMAGE_VERSION").as_deref(),
            Some("0.1.0.7")
        );
        assert_eq!(
            osrel_value(&text, "MXRACK_BOARD").as_deref(),
            Some("x86_64")
        );
        assert!(osrel_of(b"MZ").is_err());
        let mut cut = pe.clone();
        cut.truncate(0x100);
        assert!(osrel_of(&cut).is_err());
    }
}
