//! A small RIFF/WAVE header walker, used only to diagnose bad files with byte
//! offsets before hound reads them (hound reports *that* a header is bad, not
//! *where*), and to check that the data chunk is all there.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::RecordingError;

/// What a WAV header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavLayout {
    /// Channels.
    pub channels: u16,
    /// Samples per second.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits_per_sample: u16,
    /// Bytes per frame (all channels of one sample instant).
    pub block_align: u64,
    /// Byte offset of the first sample.
    pub data_offset: u64,
    /// Frames (samples per channel) declared by the data chunk.
    pub frames: u64,
}

/// How many header bytes are read at most before the `data` chunk must have started.
const HEADER_LIMIT: usize = 1 << 16;

impl WavLayout {
    /// Read and check the header of `path`.
    pub fn read(path: &Path) -> Result<WavLayout, RecordingError> {
        let open_err = |source| RecordingError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(open_err)?;
        let file_len = f.metadata().map_err(open_err)?.len();
        let mut head = Vec::with_capacity(4096);
        f.by_ref()
            .take(HEADER_LIMIT as u64)
            .read_to_end(&mut head)
            .map_err(open_err)?;
        WavLayout::parse(&head, file_len).map_err(|detail| RecordingError::Wav {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parse a header from the first bytes of a file of `file_len` bytes.
    /// The error says what was expected at which byte offset.
    pub fn parse(head: &[u8], file_len: u64) -> Result<WavLayout, String> {
        let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            head.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if head.len() < 12 {
            return Err(format!(
                "not a WAV file: {} bytes long, expected at least a 12-byte RIFF header",
                head.len()
            ));
        }
        if &head[0..4] != b"RIFF" {
            return Err(format!(
                "not a WAV file: expected \"RIFF\" at byte 0, found {:?}",
                String::from_utf8_lossy(&head[0..4])
            ));
        }
        if &head[8..12] != b"WAVE" {
            return Err(format!(
                "not a WAV file: expected \"WAVE\" at byte 8, found {:?}",
                String::from_utf8_lossy(&head[8..12])
            ));
        }
        let mut pos = 12usize;
        let mut fmt: Option<(u16, u32, u16, u16)> = None;
        loop {
            let (Some(id), Some(size)) = (head.get(pos..pos + 4), u32_at(pos + 4)) else {
                return Err(format!(
                    "header ends at byte {pos} before a \"data\" chunk (expected chunk id and size there)"
                ));
            };
            let body = pos + 8;
            match id {
                b"fmt " => {
                    if size < 16 {
                        return Err(format!(
                            "\"fmt \" chunk at byte {pos} is {size} bytes, expected at least 16"
                        ));
                    }
                    let (Some(ch), Some(rate), Some(align), Some(bits)) = (
                        u16_at(body + 2),
                        u32_at(body + 4),
                        u16_at(body + 12),
                        u16_at(body + 14),
                    ) else {
                        return Err(format!("\"fmt \" chunk at byte {pos} is cut short"));
                    };
                    if ch == 0 {
                        return Err(format!(
                            "field channels at byte {} is 0, expected >= 1",
                            body + 2
                        ));
                    }
                    if rate == 0 {
                        return Err(format!(
                            "field sample_rate at byte {} is 0, expected > 0",
                            body + 4
                        ));
                    }
                    if !matches!(bits, 8 | 16 | 24 | 32) {
                        return Err(format!(
                            "field bits_per_sample at byte {} is {bits}, expected 8, 16, 24 or 32",
                            body + 14
                        ));
                    }
                    fmt = Some((ch, rate, align, bits));
                }
                b"data" => {
                    let Some((channels, sample_rate, align, bits_per_sample)) = fmt else {
                        return Err(format!(
                            "\"data\" chunk at byte {pos} comes before any \"fmt \" chunk"
                        ));
                    };
                    let align = if align == 0 {
                        channels as u64 * (bits_per_sample as u64).div_ceil(8)
                    } else {
                        align as u64
                    };
                    let declared_end = body as u64 + size as u64;
                    if declared_end > file_len {
                        return Err(format!(
                            "truncated: the \"data\" chunk at byte {pos} declares {size} bytes (to byte {declared_end}) but the file ends at byte {file_len}"
                        ));
                    }
                    return Ok(WavLayout {
                        channels,
                        sample_rate,
                        bits_per_sample,
                        block_align: align,
                        data_offset: body as u64,
                        frames: size as u64 / align,
                    });
                }
                _ => {}
            }
            // Chunks are padded to an even size.
            pos = body + size as usize + (size as usize & 1);
            if pos >= HEADER_LIMIT {
                return Err(format!(
                    "no \"data\" chunk in the first {HEADER_LIMIT} bytes (expected one after \"fmt \")"
                ));
            }
        }
    }
}
