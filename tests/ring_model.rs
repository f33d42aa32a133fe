//! The console's receive queue against a `VecDeque`, and under real concurrency: one producer
//! thread, several consumers, every byte taken exactly once.

use pi2vm::ring::ByteRing;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => any::<u8>().prop_map(Op::Push), 2 => Just(Op::Pop)]
}

proptest! {
    #[test]
    fn behaves_like_a_bounded_fifo_that_drops_when_full(ops in prop::collection::vec(op(), 0..2000)) {
        let ring = ByteRing::<16>::new();
        let mut model = VecDeque::new();
        let mut dropped = 0;
        for op in ops {
            match op {
                Op::Push(b) => {
                    let fits = model.len() < 16;
                    prop_assert_eq!(ring.push(b), fits);
                    if fits {
                        model.push_back(b);
                    } else {
                        dropped += 1;
                    }
                }
                Op::Pop => prop_assert_eq!(ring.pop(), model.pop_front()),
            }
            prop_assert_eq!(ring.len(), model.len());
            prop_assert_eq!(ring.is_empty(), model.is_empty());
            prop_assert_eq!(ring.dropped(), dropped);
        }
    }
}

#[test]
fn a_full_ring_keeps_the_oldest_bytes() {
    let ring = ByteRing::<4>::new();
    for b in 0..6 {
        ring.push(b);
    }
    assert_eq!(ring.dropped(), 2);
    assert_eq!(
        std::iter::from_fn(|| ring.pop()).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
}

#[test]
fn concurrent_consumers_take_every_byte_exactly_once() {
    const BYTES: usize = 200_000;
    const CONSUMERS: usize = 4;
    let ring = Arc::new(ByteRing::<256>::new());
    let done = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let (ring, done) = (ring.clone(), done.clone());
            std::thread::spawn(move || {
                let mut counts = [0usize; 256];
                loop {
                    match ring.pop() {
                        Some(b) => counts[b as usize] += 1,
                        None if done.load(Ordering::Acquire) && ring.is_empty() => break,
                        None => std::hint::spin_loop(),
                    }
                }
                counts
            })
        })
        .collect();
    for i in 0..BYTES {
        while !ring.push(i as u8) {
            std::hint::spin_loop();
        }
    }
    done.store(true, Ordering::Release);
    let mut total = [0usize; 256];
    for c in consumers {
        for (t, n) in total.iter_mut().zip(c.join().unwrap()) {
            *t += n;
        }
    }
    // The producer pushed 0, 1, 2, ... wrapping at 256: each value as often as it was pushed,
    // none lost, none taken twice.
    let mut pushed = [0usize; 256];
    for i in 0..BYTES {
        pushed[i % 256] += 1;
    }
    assert_eq!(total, pushed);
}
