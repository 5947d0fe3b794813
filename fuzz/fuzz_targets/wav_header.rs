//! Any bytes: the header walker and hound must return an error or samples; never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let layout = blastnet_recording::WavLayout::parse(data, data.len() as u64);
    if let Ok(reader) = hound::WavReader::new(std::io::Cursor::new(data)) {
        let spec = reader.spec();
        if let Ok(l) = layout {
            assert_eq!(l.channels, spec.channels);
            assert_eq!(l.sample_rate, spec.sample_rate);
        }
        if spec.sample_format == hound::SampleFormat::Float {
            for s in reader.into_samples::<f32>().take(1 << 16) {
                if s.is_err() {
                    break;
                }
            }
        } else {
            for s in reader.into_samples::<i32>().take(1 << 16) {
                if s.is_err() {
                    break;
                }
            }
        }
    }
});
