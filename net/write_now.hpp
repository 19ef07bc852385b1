#pragma once
// Writing without waiting: what the kernel takes at once.

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>

namespace lowart::net {

/// Writes as much of `data` as `socket`'s send buffer takes now, without blocking, and
/// returns how much that was. `ec` is set only for a real failure (a full buffer is 0 bytes,
/// not an error). A whole answer or request nearly always fits, which spares the timed
/// asynchronous write (a timer armed and cancelled, a completion posted); the caller
/// writes the rest asynchronously.
template <class Socket, class ConstBuffers>
std::size_t write_now(Socket& socket, const ConstBuffers& data, boost::system::error_code& ec) {
  ec = {};
  if (!socket.non_blocking()) socket.non_blocking(true, ec);
  std::size_t sent = ec ? 0 : socket.write_some(data, ec);
  if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) ec = {};
  return sent;
}

} // namespace lowart::net
