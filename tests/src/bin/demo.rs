//! The demo: plays the seed story end to end.
fn main() {
    println!("demo: not yet wired");
}
