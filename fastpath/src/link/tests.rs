// The link between two workers: order, a full ring, frames the writer skips, wrapping with
// frames of every size, jumbo frames, two threads, and the doorbell.
//! Link tests.

use super::*;

fn put(tx: &mut LinkTx, frames: &[Vec<u8>]) -> (usize, usize) {
    tx.send(
        frames.len(),
        |k, buf: &mut [u8]| -> Result<usize, ()> {
            buf[..frames[k].len()].copy_from_slice(&frames[k]);
            Ok(frames[k].len())
        },
        |()| {},
    )
}

/// Takes what is waiting (at most a burst), as byte vectors.
fn take(rx: &mut LinkRx) -> Vec<Vec<u8>> {
    let got = {
        let frames = rx.frames(BURST);
        (0..frames.len())
            .map(|i| {
                let f = frames.get(i);
                let mut v = vec![0; f.len() as usize];
                assert!(f.read_all(&mut v));
                v
            })
            .collect()
    };
    rx.consume();
    got
}

/// Takes everything waiting.
fn drain(rx: &mut LinkRx) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let got = take(rx);
        if got.is_empty() && !rx.ready() {
            return all;
        }
        all.extend(got);
    }
}

fn bell() -> Arc<Doorbell> {
    Doorbell::new().unwrap()
}

#[test]
fn frames_arrive_in_order_and_a_full_link_refuses_the_rest() {
    let (mut tx, mut rx) = link(bell());
    let frames: Vec<Vec<u8>> = (0..5000).map(|i| vec![i as u8; 60 + i % 7]).collect();
    let (went, full) = put(&mut tx, &frames);
    assert_eq!(went + full, frames.len());
    // 128-byte records; the last one's room must hold the largest frame.
    assert_eq!(went, (LINK_BYTES - MOST) / 128 + 1, "as many as fit");
    assert_eq!(drain(&mut rx), frames[..went]);
    assert!(!rx.ready());
    assert_eq!(put(&mut tx, &frames[..3]), (3, 0), "room again once consumed");
    assert_eq!(drain(&mut rx), frames[..3]);
}

#[test]
fn frames_of_every_size_wrap_round_the_ring_many_times_in_order() {
    let (mut tx, mut rx) = link(bell());
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for round in 0..200usize {
        let frames: Vec<Vec<u8>> =
            (0..20).map(|i| vec![(round * 20 + i) as u8; [60, 1514, 9216, 300, 64][(round + i) % 5]]).collect();
        let (went, _) = put(&mut tx, &frames);
        sent.extend_from_slice(&frames[..went]);
        got.extend(drain(&mut rx));
    }
    assert!(sent.len() > 3000, "{} sent", sent.len());
    assert!(got == sent, "every frame whole, in order ({} of {})", got.len(), sent.len());
}

#[test]
fn a_frame_the_writer_skips_takes_no_room() {
    let (mut tx, mut rx) = link(bell());
    let mut skipped = 0;
    let (went, full) = tx.send(
        3,
        |k, buf| {
            if k == 1 {
                return Err("too big");
            }
            buf[0] = k as u8;
            Ok(1)
        },
        |_| skipped += 1,
    );
    assert_eq!((went, full, skipped), (2, 0, 1));
    assert_eq!(drain(&mut rx), [vec![0], vec![2]]);
}

#[test]
fn two_threads_pass_a_million_frames_in_order() {
    const N: u32 = 1_000_000;
    let (mut tx, mut rx) = link(bell());
    let producer = std::thread::spawn(move || {
        let mut next = 0u32;
        while next < N {
            let (went, _) = tx.send(
                32.min((N - next) as usize),
                |k, buf: &mut [u8]| -> Result<usize, ()> {
                    buf[..4].copy_from_slice(&(next + k as u32).to_le_bytes());
                    Ok(64 + (next as usize + k) % 1500)
                },
                |()| {},
            );
            next += went as u32;
            if went == 0 {
                std::thread::yield_now();
            }
        }
        tx
    });
    let mut want = 0u32;
    while want < N {
        let got = take(&mut rx);
        for f in &got {
            let seq = u32::from_le_bytes(f[..4].try_into().unwrap());
            assert_eq!((seq, f.len()), (want, 64 + want as usize % 1500));
            want += 1;
        }
        if got.is_empty() {
            std::thread::yield_now();
        }
    }
    let tx = producer.join().unwrap();
    assert_eq!(tx.bell.fd.read().ok(), None, "nobody slept: nobody was rung");
    assert!(!tx.orphaned());
    drop(rx);
    assert!(tx.orphaned());
}

#[test]
fn frames_for_a_sleeping_worker_ring_its_doorbell() {
    let bell = bell();
    let (mut tx, mut rx) = link(Arc::clone(&bell));
    put(&mut tx, &[vec![1; 60]]);
    assert_eq!(bell.fd.read().ok(), None, "awake: not rung");
    bell.going_to_sleep();
    assert!(rx.ready(), "the last look before sleeping sees what came before");
    put(&mut tx, &[vec![2; 60], vec![3; 60]]);
    assert_eq!(bell.fd.read().ok(), Some(1), "asleep: rung once per send");
    bell.awake();
    put(&mut tx, &[vec![4; 60]]);
    assert_eq!(bell.fd.read().ok(), None);
    assert_eq!(drain(&mut rx).len(), 4);
}
