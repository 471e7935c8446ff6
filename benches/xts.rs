//! AES-256-XTS throughput over 4 KiB data units on one core: ebsim's engine (VAES
//! where the CPU has it), its portable path, the block-at-a-time `xts-mode` crate,
//! and the aes crate's bare block kernel, measured in the same run. (The
//! OpenSSL comparison, `openssl speed -evp aes-256-xts`, is taken beside it by the
//! benchmark script; see docs/BENCHMARKS.md.)

use aes::Aes256;
use aes::cipher::KeyInit;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ebsim::crypto::xts::{DATA_UNIT, Xts};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let key: Vec<u8> = (0..64u8)
        .map(|i| i.wrapping_mul(31).wrapping_add(7))
        .collect();
    let ours = Xts::new(&key).unwrap();
    let portable = Xts::portable(&key).unwrap();
    eprintln!("ebsim XTS engine: {}", ours.engine());
    let oracle = xts_mode::Xts128::new(
        Aes256::new_from_slice(&key[..32]).unwrap(),
        Aes256::new_from_slice(&key[32..]).unwrap(),
    );
    let mut g = c.benchmark_group("xts_4k_one_core");
    {
        // The ceiling: the aes crate's block kernel alone over one unit (ECB).
        use aes::cipher::BlockCipherEncrypt;
        let aes = Aes256::new_from_slice(&key[..32]).unwrap();
        let mut blocks = vec![aes::Block::default(); DATA_UNIT / 16];
        g.throughput(Throughput::Bytes(DATA_UNIT as u64));
        g.bench_function("aes_blocks_only_1_unit", |b| {
            b.iter(|| aes.encrypt_blocks(black_box(&mut blocks)))
        });
    }
    for units in [1usize, 16] {
        let mut buf = vec![0x5au8; units * DATA_UNIT];
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(format!("ebsim_batched_{units}_units"), |b| {
            b.iter(|| ours.encrypt(black_box(1234), black_box(&mut buf)).unwrap())
        });
        g.bench_function(format!("ebsim_portable_{units}_units"), |b| {
            b.iter(|| {
                portable
                    .encrypt(black_box(1234), black_box(&mut buf))
                    .unwrap()
            })
        });
        g.bench_function(format!("xts_mode_{units}_units"), |b| {
            b.iter(|| {
                oracle.encrypt_area(
                    black_box(&mut buf),
                    DATA_UNIT,
                    1234,
                    xts_mode::get_tweak_default,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
