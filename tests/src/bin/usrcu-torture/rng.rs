//! A small, seedable PRNG (xorshift64*): every thread of the torture draws
//! its choices from its own stream, so a seed reproduces the mix of
//! operations (not the interleaving, which the scheduler decides).

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `seed` and `stream` (the thread's number).
    pub fn new(seed: u64, stream: u64) -> Rng {
        // splitmix64 of the pair, so that neighbouring streams diverge at once.
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    /// True once in `n` draws on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}
