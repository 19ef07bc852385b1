#pragma once
// session::send_out and the stream writes built on it, as templates: the completion
// travels inside Asio's handler (its recycling allocator), not a std::function, whose
// heap allocation for a capture holding a shared_ptr was one per streamed event.
// Included by the files that write to a session (session_write.cpp, proxy_stream.cpp).

#include "net/session.hpp"
#include "net/worker.hpp"
#include "net/write_now.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

namespace lowart::net {

template <class Then> void session::send_out(Then&& then) {
  // What the socket does not take at once goes out asynchronously under the idle timeout.
  // `then` is posted, never run inside the caller.
  std::size_t sent = 0;
  beast::error_code ec;
  std::array<asio::const_buffer, 2> all{asio::buffer(out_), asio::buffer(out_tail_.data(), out_tail_.size())};
  auto total = out_.size() + out_tail_.size();
  visit([&](auto& s) { sent = write_now(s.socket(), all, ec); });
  if (ec || sent == total) {
    out_tail_ = {};
    asio::post(worker_.ioc, [then = std::forward<Then>(then), ok = !ec]() mutable { then(ok); });
    return;
  }
  // The rest: of the head (and the tail after it), or of the tail alone.
  if (sent < out_.size())
    out_rest_ = {asio::buffer(out_) + sent, all[1]};
  else
    out_rest_ = {asio::const_buffer{}, all[1] + (sent - out_.size())};
  set_deadline(std::chrono::milliseconds(worker_.state.config.server.idle_timeout_ms));
  visit([&](auto& s) {
    asio::async_write(
        s, out_rest_,
        [self = shared_from_this(), then = std::forward<Then>(then)](beast::error_code ec, std::size_t) mutable {
          self->clear_deadline();
          self->out_tail_ = {};
          then(!ec);
        });
  });
}

template <class Done> void session::write_raw_swapping(std::string& data, Done&& done) {
  out_.swap(data);
  data.clear();
  send_out(std::forward<Done>(done));
}

} // namespace lowart::net
