//! Parse + plan + retention over a dataset with many snapshots: the pure
//! work of one no-change cycle per job.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tandem_repl::naming::JobName;
use tandem_repl::plan::{plan, retention, Side};
use tandem_zfs::parse::parse_listing;
use tandem_zfs::DatasetName;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse+plan+retention");
    for snaps in [10usize, 1000, 10000] {
        let src_text = tandem_benches::listing_text("rpool/data/vm-100-disk-0", snaps);
        let dst_text = tandem_benches::listing_text("tank/replica/vm-100-disk-0", snaps);
        let sn = DatasetName::parse("rpool/data/vm-100-disk-0").expect("name");
        let tn = DatasetName::parse("tank/replica/vm-100-disk-0").expect("name");
        let job = JobName::parse("j").expect("job");
        g.throughput(Throughput::Elements(snaps as u64));
        g.bench_with_input(BenchmarkId::from_parameter(snaps), &snaps, |b, _| {
            b.iter(|| {
                let s = parse_listing(black_box(&src_text)).expect("parse");
                let t = parse_listing(black_box(&dst_text)).expect("parse");
                let (sd, td) = (s.get(&sn), t.get(&tn));
                let p = plan(
                    &job,
                    Side {
                        dataset: sd,
                        name: &sn,
                    },
                    Side {
                        dataset: td,
                        name: &tn,
                    },
                    chrono::Utc::now(),
                )
                .expect("plan");
                let r = sd.map(|d| retention(&job, d, 3, &[d.snapshots[0].guid]).len());
                black_box((p, r))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
