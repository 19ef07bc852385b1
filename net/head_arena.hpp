#pragma once
// Where a downstream request's head lives: its fields, method and target are allocated
// from the connection's arena, one chunk kept with the connection and reused by each
// request on it, instead of a heap node per header field (Beast's basic_fields allocates
// one per field, plus the target). What does not fit (a head larger than the chunk)
// comes from the heap as before. A copy of the fields (polymorphic_allocator's copy
// rule) goes to the default heap, so only the request itself refers to the arena.

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstddef>
#include <memory>
#if defined(__SANITIZE_ADDRESS__)
#define LOWART_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOWART_ARENA_ASAN 1
#endif
#endif
#ifdef LOWART_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#endif
#include <memory_resource>
#include <new>

namespace lowart::net {

class head_arena final : public std::pmr::memory_resource {
public:
  /// Room for the head a typical SDK sends (a dozen fields) with Beast's per-field overhead.
  static constexpr std::size_t chunk_bytes = 2048;

  /// Forgets every allocation: only when nothing allocated from the arena is alive
  /// (between requests, after the last request's message and parser are gone).
  /// Under ASan the chunk is poisoned here, so a use of a head after its arena was
  /// reused is caught.
  void reset() noexcept {
    used_ = 0;
    poison();
  }
  ~head_arena() override {
#ifdef LOWART_ARENA_ASAN
    if (chunk_) ASAN_UNPOISON_MEMORY_REGION(chunk_.get(), chunk_bytes);
#endif
  }

private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    if (!chunk_) {
      chunk_ = std::make_unique_for_overwrite<std::byte[]>(chunk_bytes);
      poison();
    }
    std::size_t at = (used_ + align - 1) & ~(align - 1);
    if (align <= alignof(std::max_align_t) && at + bytes <= chunk_bytes) {
      used_ = at + bytes;
#ifdef LOWART_ARENA_ASAN
      ASAN_UNPOISON_MEMORY_REGION(chunk_.get() + at, bytes);
#endif
      return chunk_.get() + at;
    }
    return ::operator new(bytes, std::align_val_t(align));
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
    auto* b = static_cast<std::byte*>(p);
    if (chunk_ && b >= chunk_.get() && b < chunk_.get() + chunk_bytes) return; // reclaimed by reset()
    (void)bytes;
    ::operator delete(p, std::align_val_t(align));
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }
  void poison() noexcept {
#ifdef LOWART_ARENA_ASAN
    if (chunk_) ASAN_POISON_MEMORY_REGION(chunk_.get(), chunk_bytes);
#endif
  }

  std::unique_ptr<std::byte[]> chunk_;
  std::size_t used_ = 0;
};

using head_allocator = std::pmr::polymorphic_allocator<char>;
using request_fields = boost::beast::http::basic_fields<head_allocator>;
/// A downstream request as the session parses it.
using downstream_request = boost::beast::http::request<boost::beast::http::string_body, request_fields>;
using request_parser = boost::beast::http::request_parser<boost::beast::http::string_body, head_allocator>;

} // namespace lowart::net
