//! A `.zip` archive read as the tar the volume helper unpacks: the helper
//! reads tar only, so a zip upload is turned into one here, entry by entry,
//! as it is sent. Names are passed on as written and checked where every
//! archive is checked, by the helper (no `..`, no absolute names, no links
//! that lead out, nothing written through a link); a name the tar format
//! cannot hold is refused here with the entry's name.

use std::io::{Read, Seek, Write};

/// Zip's local-file and end-of-directory signatures: how a zip starts.
pub fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
}

/// Writes the entries of `zip` as a tar to `out`: files, folders and links
/// (an entry whose Unix mode says link holds its target), with their modes
/// and times. At most `max_bytes` of content in all (a zip bomb is cut
/// there, with an error); an entry that holds fewer bytes than it declares
/// is an error, never a short file.
pub fn zip_to_tar<R: Read + Seek, W: Write>(zip: R, out: W, max_bytes: u64) -> Result<(), String> {
    let mut archive =
        zip::ZipArchive::new(zip).map_err(|e| format!("the .zip does not read: {e}"))?;
    let mut tar = tar::Builder::new(out);
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {} of the .zip does not read: {e}", i + 1))?;
        let name = entry
            .name()
            .map_err(|e| {
                format!(
                    "entry {} of the .zip has a name that does not read: {e}",
                    i + 1
                )
            })?
            .to_string();
        let mut header = tar::Header::new_gnu();
        let mode = entry.unix_mode().unwrap_or(0);
        header.set_mtime(entry.last_modified().map(mtime).unwrap_or(0));
        let (kind, perm) = if entry.is_dir() {
            (tar::EntryType::Directory, 0o755)
        } else if entry.is_symlink() {
            (tar::EntryType::Symlink, 0o777)
        } else {
            (tar::EntryType::Regular, 0o644)
        };
        let perm = if mode & 0o7777 != 0 {
            mode & 0o7777
        } else {
            perm
        };
        header.set_entry_type(kind);
        header.set_mode(perm);
        let refuse = |e: std::io::Error| format!("{name:?} in the .zip cannot be unpacked: {e}");
        match kind {
            tar::EntryType::Symlink => {
                let mut target = Vec::new();
                (&mut entry)
                    .take(4096)
                    .read_to_end(&mut target)
                    .map_err(refuse)?;
                let target = String::from_utf8(target).map_err(|_| {
                    format!("the link {name:?} in the .zip has a target that is not text")
                })?;
                header.set_size(0);
                tar.append_link(&mut header, &name, &target)
                    .map_err(refuse)?;
            }
            tar::EntryType::Directory => {
                header.set_size(0);
                tar.append_data(&mut header, &name, std::io::empty())
                    .map_err(refuse)?;
            }
            _ => {
                let size = entry.size();
                total = total.saturating_add(size);
                if total > max_bytes {
                    return Err(format!(
                        "the .zip unpacks to more than {max_bytes} bytes: refused (a zip bomb?)"
                    ));
                }
                header.set_size(size);
                let mut exact = Exact {
                    inner: (&mut entry).take(size),
                    left: size,
                };
                tar.append_data(&mut header, &name, &mut exact)
                    .map_err(refuse)?;
            }
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| format!("the .zip could not be sent: {e}"))
}

/// Reads exactly `left` bytes from `inner`, or fails.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} bytes fewer than it declares", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Seconds since 1970 of a zip time (local time as written; taken as UTC).
fn mtime(t: zip::DateTime) -> u64 {
    let (y, m, d) = (
        i64::from(t.year()),
        i64::from(t.month()),
        i64::from(t.day()),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400
        + i64::from(t.hour()) * 3600
        + i64::from(t.minute()) * 60
        + i64::from(t.second());
    u64::try_from(secs).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An entry of a test `.zip`.
    enum Z<'a> {
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
        Dir(&'a str),
    }

    fn zip_of(entries: &[Z]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o640);
        for entry in entries {
            match entry {
                Z::File(name, data) => {
                    w.start_file(*name, opts).unwrap();
                    w.write_all(data).unwrap();
                }
                Z::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
                Z::Dir(name) => w.add_directory(*name, opts).unwrap(),
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn tar_entries(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap() & 0o777;
                let path = e.path().unwrap().display().to_string();
                let mut body = String::new();
                e.read_to_string(&mut body).unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| format!(" -> {}", l.display()))
                    .unwrap_or_default();
                format!("{kind:?} {path} {mode:o}{link} {body}")
            })
            .collect()
    }

    #[test]
    fn files_folders_and_links_become_tar_entries() {
        let z = zip_of(&[
            Z::Dir("site/"),
            Z::File("site/index.html", b"<h1/>"),
            Z::Link("site/latest", "index.html"),
        ]);
        assert!(is_zip(&z));
        let mut out = Vec::new();
        zip_to_tar(Cursor::new(z), &mut out, 1 << 20).unwrap();
        assert_eq!(
            tar_entries(&out),
            [
                "Directory site/ 640 ",
                "Regular site/index.html 640 <h1/>",
                "Symlink site/latest 640 -> index.html "
            ]
        );
    }

    #[test]
    fn a_zip_that_unpacks_to_too_much_is_refused() {
        let big = vec![0u8; 1 << 20];
        let z = zip_of(&[Z::File("a", &big), Z::File("b", &big)]);
        assert!(z.len() < 64 * 1024, "it compresses: {}", z.len());
        let err = zip_to_tar(Cursor::new(z), std::io::sink(), (1 << 20) + 10).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn names_that_leave_the_folder_are_refused_and_garbage_is_not_a_zip() {
        let z = zip_of(&[Z::File("../evil", b"x")]);
        let err = zip_to_tar(Cursor::new(z), std::io::sink(), 1 << 20).unwrap_err();
        assert!(err.contains("\"../evil\""), "{err}");
        assert!(!is_zip(b"\x1f\x8b\x08"));
        let err = zip_to_tar(
            Cursor::new(b"PK\x03\x04garbage".to_vec()),
            std::io::sink(),
            1,
        )
        .unwrap_err();
        assert!(err.contains("does not read"), "{err}");
    }
}
