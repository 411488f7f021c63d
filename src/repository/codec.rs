//! How base backups and Redis snapshots are compressed in a repository: zstd (level 3, on
//! every core the host has) or lz4 (one core, faster per core, larger). Each catalog entry
//! records its codec, so a restore reads what was written whatever the spec says now. WAL is
//! always zstd: its object names say what "identical" means, and must not change with a spec.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// zstd level for base backups and snapshots: fast, and still well ahead of gzip in ratio.
const ZSTD_LEVEL: i32 = 3;

/// A compression format, as catalog entries name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    Zstd,
    Lz4,
}

impl From<crate::api::Compression> for Codec {
    fn from(compression: crate::api::Compression) -> Self {
        match compression {
            crate::api::Compression::Zstd => Self::Zstd,
            crate::api::Compression::Lz4 => Self::Lz4,
        }
    }
}

impl Codec {
    /// Its name, as catalog entries write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }

    /// The extension of the objects it writes.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Zstd => "zst",
            Self::Lz4 => "lz4",
        }
    }

    /// A compressor writing into `into`; zstd works on `threads` threads (lz4 on the caller's).
    pub(super) fn encoder<W: Write>(self, into: W, threads: u32) -> std::io::Result<Encoder<W>> {
        Ok(match self {
            Self::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(into, ZSTD_LEVEL)?;
                if threads > 1 {
                    encoder.multithread(threads)?;
                }
                Encoder::Zstd(encoder)
            }
            Self::Lz4 => Encoder::Lz4(lz4_flex::frame::FrameEncoder::new(into)),
        })
    }

    /// A decompressor reading from `from`.
    pub(super) fn decoder<'a>(self, from: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(from)?),
            Self::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(from)),
        })
    }
}

/// A compressor of either codec.
pub(super) enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Write what is left and the frame's end; the writer underneath.
    pub(super) fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Zstd(encoder) => encoder.finish(),
            Self::Lz4(encoder) => encoder.finish().map_err(std::io::Error::other),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Zstd(encoder) => encoder.write(data),
            Self::Lz4(encoder) => encoder.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Zstd(encoder) => encoder.flush(),
            Self::Lz4(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_codec_reads_back_what_it_wrote() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [Codec::Zstd, Codec::Lz4] {
            let mut encoder = codec.encoder(Vec::new(), 2).unwrap();
            encoder.write_all(&data).unwrap();
            let compressed = encoder.finish().unwrap();
            assert!(compressed.len() < data.len() / 4, "{codec:?} compresses");
            let mut back = Vec::new();
            codec
                .decoder(compressed.as_slice())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{codec:?}");
        }
        let zstd = Codec::Zstd
            .encoder(Vec::new(), 1)
            .unwrap()
            .finish()
            .unwrap();
        let mut out = Vec::new();
        assert!(
            Codec::Lz4
                .decoder(zstd.as_slice())
                .unwrap()
                .read_to_end(&mut out)
                .is_err(),
            "one codec does not read the other's"
        );
    }

    #[test]
    fn catalog_entries_name_the_codec_in_lowercase() {
        assert_eq!(serde_json::to_string(&Codec::Lz4).unwrap(), "\"lz4\"");
        assert_eq!(
            serde_json::from_str::<Codec>("\"zstd\"").unwrap(),
            Codec::Zstd
        );
    }
}
