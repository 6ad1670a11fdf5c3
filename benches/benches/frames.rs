//! Frame encode and decode throughput, per compression level, on a mixed
//! buffer (half text-like, half random, like a VM disk stream).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tandem_stream::frame::{decode_all, encode_frame, encode_trailer, Compression};

fn mixed(n: usize) -> Vec<u8> {
    let text = b"usr/lib/x86_64-linux-gnu/libc.so.6 ELF ";
    let mut x: u64 = 0x2545F4914F6CDD1D;
    (0..n)
        .map(|i| {
            if (i / 65536) % 2 == 0 {
                text[i % text.len()]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let raw = mixed(8 << 20);
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(10);
    for (name, comp) in [
        ("none", Compression::None),
        ("zstd1", Compression::Zstd(1)),
        ("zstd3", Compression::Zstd(3)),
        ("zstd9", Compression::Zstd(9)),
    ] {
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        g.bench_with_input(BenchmarkId::new("encode", name), &comp, |b, comp| {
            b.iter(|| {
                wire.clear();
                for chunk in raw.chunks(1 << 20) {
                    encode_frame(black_box(chunk), *comp, &mut scratch, &mut wire);
                }
                encode_trailer(raw.len() as u64, 8, &mut wire);
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", name), &wire, |b, wire| {
            b.iter(|| decode_all(black_box(wire)).expect("decodes"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
