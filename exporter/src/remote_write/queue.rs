//! The bounded queue between collection and sending: request bodies, already compressed, held
//! up to a capacity in samples. Past it the oldest batch goes (the newest data is what a
//! dashboard wants after an outage), and the caller counts what went.

use bytes::Bytes;
use std::collections::VecDeque;

/// One request's worth of samples, ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Samples in the request.
    pub samples: usize,
    /// The snappy-compressed `WriteRequest`.
    pub body: Bytes,
}

/// What making room dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Batches dropped.
    pub batches: usize,
    /// Samples in them.
    pub samples: usize,
}

/// Batches waiting to be sent, oldest first, never more than `capacity` samples in all.
#[derive(Debug)]
pub struct BatchQueue {
    batches: VecDeque<Batch>,
    capacity: usize,
    samples: usize,
    bytes: usize,
}

impl BatchQueue {
    /// An empty queue holding at most `capacity` samples.
    pub fn new(capacity: usize) -> Self {
        BatchQueue {
            batches: VecDeque::new(),
            capacity,
            samples: 0,
            bytes: 0,
        }
    }

    /// Adds the newest batch, then drops the oldest batches until the queue is within its
    /// capacity (the new one too, if it alone exceeds it).
    pub fn push_back(&mut self, batch: Batch) -> Dropped {
        self.add(batch, false)
    }

    /// Puts a batch whose send failed back in front, to be retried first; like
    /// [`BatchQueue::push_back`] it then drops the oldest, which may be this batch itself.
    pub fn push_front(&mut self, batch: Batch) -> Dropped {
        self.add(batch, true)
    }

    /// Takes the oldest batch.
    pub fn pop_front(&mut self) -> Option<Batch> {
        let batch = self.batches.pop_front()?;
        self.samples -= batch.samples;
        self.bytes -= batch.body.len();
        Some(batch)
    }

    /// Samples queued (never more than the capacity).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Bytes of request bodies queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Batches queued.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether no batch is queued.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn add(&mut self, batch: Batch, front: bool) -> Dropped {
        self.samples += batch.samples;
        self.bytes += batch.body.len();
        if front {
            self.batches.push_front(batch);
        } else {
            self.batches.push_back(batch);
        }
        let mut dropped = Dropped::default();
        while self.samples > self.capacity {
            let Some(oldest) = self.pop_front() else {
                break;
            };
            dropped.batches += 1;
            dropped.samples += oldest.samples;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(samples: usize, tag: u8) -> Batch {
        Batch {
            samples,
            body: Bytes::from(vec![tag; samples / 10 + 1]),
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_and_says_how_much() {
        let mut queue = BatchQueue::new(100);
        assert_eq!(queue.push_back(batch(40, 1)), Dropped::default());
        assert_eq!(queue.push_back(batch(40, 2)), Dropped::default());
        assert_eq!(queue.samples(), 80);
        assert_eq!(
            queue.push_back(batch(30, 3)),
            Dropped {
                batches: 1,
                samples: 40
            }
        );
        assert_eq!(queue.samples(), 70);
        assert_eq!(queue.pop_front().map(|b| b.body[0]), Some(2));
        assert_eq!(queue.pop_front().map(|b| b.body[0]), Some(3));
        assert!(queue.is_empty());
        assert_eq!((queue.samples(), queue.bytes()), (0, 0));
    }

    #[test]
    fn a_retried_batch_is_first_out_and_first_dropped() {
        let mut queue = BatchQueue::new(100);
        queue.push_back(batch(50, 2));
        assert_eq!(queue.push_front(batch(40, 1)), Dropped::default());
        assert_eq!(queue.pop_front().map(|b| b.body[0]), Some(1));
        queue.push_back(batch(40, 3));
        // Full again: putting the failed batch back drops it, the oldest.
        assert_eq!(
            queue.push_front(batch(40, 1)),
            Dropped {
                batches: 1,
                samples: 40
            }
        );
        assert_eq!(queue.pop_front().map(|b| b.body[0]), Some(2));
    }

    #[test]
    fn a_batch_larger_than_the_capacity_is_dropped_whole() {
        let mut queue = BatchQueue::new(10);
        queue.push_back(batch(5, 1));
        assert_eq!(
            queue.push_back(batch(11, 2)),
            Dropped {
                batches: 2,
                samples: 16
            }
        );
        assert!(queue.is_empty());
    }

    proptest! {
        #[test]
        fn every_sample_is_queued_taken_or_dropped_and_the_bound_holds(
            ops in proptest::collection::vec((0usize..3, 1usize..60), 0..200),
            capacity in 1usize..200,
        ) {
            let mut queue = BatchQueue::new(capacity);
            let (mut added, mut taken, mut dropped) = (0, 0, 0);
            for (op, samples) in ops {
                match op {
                    0 => {
                        added += samples;
                        dropped += queue.push_back(batch(samples, 0)).samples;
                    }
                    1 => {
                        added += samples;
                        dropped += queue.push_front(batch(samples, 0)).samples;
                    }
                    _ => taken += queue.pop_front().map_or(0, |b| b.samples),
                }
                prop_assert!(queue.samples() <= capacity);
                prop_assert_eq!(added, taken + dropped + queue.samples());
                let bytes: usize = queue.batches.iter().map(|b| b.body.len()).sum();
                prop_assert_eq!(bytes, queue.bytes());
            }
        }
    }
}
