//! Host (std) support for tests, doctests and benchmarks.

/// Defines `[$vis] struct $name`, a host implementation of [`CpuLocal`](crate::CpuLocal)
/// in which threads stand in for CPUs (needs `std`; for tests, doctests and
/// benchmarks, not for kernels).
///
/// - Each live thread claims the lowest free id below `$n` (at most 64) on
///   first use and gives it back when it exits, so threads running at the
///   same time never share an id; a thread that finds none free gets
///   `usize::MAX` and is served by the uncached paths.
/// - "Masking interrupts" takes a per-id spin flag (nesting counted per
///   thread), which is what makes `run_on` exclusive with the owner's
///   masked sections. Pinning ([`CpuLocal::pin`](crate::CpuLocal::pin))
///   takes the same flag: a thread cannot interrupt another at an
///   instruction boundary as an IPI does, so here `run_on` waits for the
///   owner's pinned section to end instead.
/// - `run_on(cpu, f)` takes `cpu`'s flag, runs `f` on the calling thread
///   with `cpu_id()` reporting `cpu`, and releases the flag; it returns
///   `false` when called inside a masked section (as a kernel must, to
///   avoid waiting for an IPI with interrupts off).
///
/// ```
/// framekeep::host_cpu_local!(Cpu, 4);
/// use framekeep::{CpuLocal, InterruptControl};
/// let me = Cpu::cpu_id();
/// let s = Cpu::save_and_disable();
/// assert!(!Cpu::run_on(me, &mut || ()));   // not from a masked section
/// Cpu::restore(s);
/// Cpu::pin();
/// assert!(!Cpu::run_on(me, &mut || ()));   // nor from a pinned one
/// Cpu::unpin();
/// std::thread::spawn(move || assert_ne!(Cpu::cpu_id(), me)).join().unwrap();
/// ```
#[macro_export]
macro_rules! host_cpu_local {
    ($name:ident, $n:expr) => {
        $crate::host_cpu_local!(pub(self) $name, $n);
    };
    ($vis:vis $name:ident, $n:expr) => {
        /// Host stand-in for CPUs (see `framekeep::host_cpu_local!`).
        #[derive(Debug)]
        $vis struct $name;

        impl $name {
            const __N: usize = {
                assert!($n <= 64 && $n > 0);
                $n
            };

            fn __shared() -> &'static (
                ::std::sync::atomic::AtomicU64,
                [::std::sync::atomic::AtomicBool; 64],
            ) {
                static S: (
                    ::std::sync::atomic::AtomicU64,
                    [::std::sync::atomic::AtomicBool; 64],
                ) = (
                    ::std::sync::atomic::AtomicU64::new(0),
                    [const { ::std::sync::atomic::AtomicBool::new(false) }; 64],
                );
                &S
            }

            /// (id, mask depth) of this thread; claims an id on first use.
            fn __tls<R>(f: impl FnOnce(&::std::cell::Cell<(usize, u32)>) -> R) -> R {
                struct Tls(::std::cell::Cell<(usize, u32)>);
                impl Drop for Tls {
                    fn drop(&mut self) {
                        let id = self.0.get().0;
                        if id < 64 {
                            $name::__shared()
                                .0
                                .fetch_and(!(1u64 << id), ::std::sync::atomic::Ordering::AcqRel);
                        }
                    }
                }
                ::std::thread_local! {
                    static T: Tls = const { Tls(::std::cell::Cell::new((usize::MAX - 1, 0))) };
                }
                T.with(|tls| {
                    if tls.0.get().0 == usize::MAX - 1 {
                        let ids = &$name::__shared().0;
                        let mut cur = ids.load(::std::sync::atomic::Ordering::Relaxed);
                        let id = loop {
                            let free = (!cur).trailing_zeros() as usize;
                            if free >= Self::__N {
                                break usize::MAX;
                            }
                            match ids.compare_exchange_weak(
                                cur,
                                cur | (1 << free),
                                ::std::sync::atomic::Ordering::AcqRel,
                                ::std::sync::atomic::Ordering::Relaxed,
                            ) {
                                Ok(_) => break free,
                                Err(c) => cur = c,
                            }
                        };
                        tls.0.set((id, 0));
                    }
                    f(&tls.0)
                })
            }

            fn __lock(id: usize) {
                let flag = &$name::__shared().1[id];
                while flag
                    .compare_exchange_weak(
                        false,
                        true,
                        ::std::sync::atomic::Ordering::Acquire,
                        ::std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_err()
                {
                    ::std::thread::yield_now();
                }
            }

            fn __unlock(id: usize) {
                $name::__shared().1[id].store(false, ::std::sync::atomic::Ordering::Release);
            }
        }

        impl $name {
            /// Enters a masked or pinned section: the id's flag, nesting counted.
            fn __enter() {
                $name::__tls(|tls| {
                    let (id, depth) = tls.get();
                    if depth == 0 && id < 64 {
                        $name::__lock(id);
                    }
                    tls.set((id, depth + 1));
                })
            }

            fn __leave() {
                $name::__tls(|tls| {
                    let (id, depth) = tls.get();
                    if depth == 1 && id < 64 {
                        $name::__unlock(id);
                    }
                    tls.set((id, depth - 1));
                })
            }
        }

        impl $crate::InterruptControl for $name {
            type Saved = ();
            fn save_and_disable() {
                $name::__enter()
            }
            fn restore(_: ()) {
                $name::__leave()
            }
        }

        // SAFETY: an id belongs to one live thread at a time; masked and
        // pinned sections of an id are serialised by its spin flag (held
        // from the outermost save_and_disable or pin to the matching
        // restore or unpin, and by run_on while it acts as that id, with
        // cpu_id() reporting it): nothing ever interrupts a pinned section,
        // which the contract allows but does not require.
        unsafe impl $crate::CpuLocal for $name {
            fn cpu_id() -> usize {
                $name::__tls(|tls| tls.get().0)
            }
            fn pin() {
                $name::__enter()
            }
            fn unpin() {
                $name::__leave()
            }
            fn run_on(cpu: usize, f: &mut dyn FnMut()) -> bool {
                if cpu >= Self::__N {
                    return false;
                }
                let (me, depth) = $name::__tls(|tls| tls.get());
                if depth != 0 {
                    return false;
                }
                $name::__lock(cpu);
                $name::__tls(|tls| tls.set((cpu, 1)));
                f();
                $name::__tls(|tls| tls.set((me, 0)));
                $name::__unlock(cpu);
                true
            }
        }
    };
}
