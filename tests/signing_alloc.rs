//! The signing hot path does not allocate: a counting allocator, per thread, shows
//! zero heap allocations in `verify`, `sign_to` and the inbound hex checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crm::webhooks::signing::{verify_whatsapp, WebhookSecret, SIGNATURE_LEN};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> usize {
    let before = ALLOCS.with(Cell::get);
    std::hint::black_box(f());
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_hot_path_allocates_nothing() {
    let signer = WebhookSecret::generate().signer();
    let body = vec![b'x'; 16 * 1024];
    let sig = signer.sign("msg_1", 1_700_000_000, &body);
    let rotated = format!("v1a,AAAA v1,{} {sig}", "B".repeat(43) + "=");

    assert_eq!(
        allocations(|| signer.verify("msg_1", "1700000000", &sig, &body, 1_700_000_000)),
        0
    );
    assert_eq!(
        allocations(|| signer.verify("msg_1", "1700000000", &rotated, &body, 1_700_000_100)),
        0
    );
    assert_eq!(
        allocations(|| signer.verify("msg_1", "1700000000", "v1,junk", &body, 1_700_000_000)),
        0
    );
    let mut buf = [0u8; SIGNATURE_LEN];
    assert_eq!(
        allocations(|| signer
            .sign_to("msg_1", 1_700_000_000, &body, &mut buf)
            .len()),
        0
    );
    assert_eq!(
        allocations(|| verify_whatsapp("secret", &body, "sha256=00")),
        0
    );
    // The counter works: a String allocates.
    assert!(allocations(|| signer.sign("msg_1", 1_700_000_000, &body)) > 0);
}
