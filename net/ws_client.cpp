#include "net/ws_client.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <openssl/ssl.h>

#include <atomic>
#include <optional>

namespace lowart::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

asio::ssl::context& ws_tls() {
  static asio::ssl::context ctx = [] {
    asio::ssl::context c(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    c.set_default_verify_paths(ec);
    c.set_verify_mode(asio::ssl::verify_peer);
    return c;
  }();
  return ctx;
}

class listener : public ws_listener, public std::enable_shared_from_this<listener> {
public:
  using plain = websocket::stream<beast::tcp_stream>;
  using secure = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

  listener(asio::io_context& ioc, http_target target, std::chrono::milliseconds timeout,
           std::function<void(std::string)> on_message, std::function<void(std::string)> on_end)
      : ioc_(ioc), target_(std::move(target)), timeout_(timeout), on_message_(std::move(on_message)),
        on_end_(std::move(on_end)), resolver_(ioc) {}

  void start() {
    resolver_.async_resolve(target_.host, std::to_string(target_.port),
                            [self = shared_from_this()](beast::error_code ec, asio::ip::tcp::resolver::results_type r) {
                              if (ec) return self->end("cannot resolve: " + ec.message());
                              self->connect(r);
                            });
  }

  void close() override {
    closed_.store(true);
    asio::post(ioc_, [self = shared_from_this()] {
      beast::error_code ignored;
      if (self->plain_) beast::get_lowest_layer(*self->plain_).socket().close(ignored);
      if (self->secure_) beast::get_lowest_layer(*self->secure_).socket().close(ignored);
      self->resolver_.cancel();
    });
  }

private:
  beast::tcp_stream& tcp() { return plain_ ? beast::get_lowest_layer(*plain_) : beast::get_lowest_layer(*secure_); }
  template <class F> void with_stream(F&& f) {
    if (plain_)
      f(*plain_);
    else
      f(*secure_);
  }

  void connect(const asio::ip::tcp::resolver::results_type& results) {
    if (closed_) return;
    if (target_.tls)
      secure_.emplace(ioc_, ws_tls());
    else
      plain_.emplace(ioc_);
    tcp().expires_after(timeout_);
    tcp().async_connect(results, [self = shared_from_this()](beast::error_code ec, const auto&) {
      if (ec) return self->end("connect: " + ec.message());
      if (self->secure_) {
        auto& ssl = self->secure_->next_layer();
        if (!SSL_set_tlsext_host_name(ssl.native_handle(), self->target_.host.c_str())) return self->end("SNI");
        ssl.set_verify_callback(asio::ssl::host_name_verification(self->target_.host));
        ssl.async_handshake(asio::ssl::stream_base::client, [self](beast::error_code ec2) {
          if (ec2) return self->end("TLS handshake: " + ec2.message());
          self->handshake();
        });
        return;
      }
      self->handshake();
    });
  }

  void handshake() {
    bool default_port = target_.port == (target_.tls ? 443 : 80);
    auto host = default_port ? target_.host : target_.host + ":" + std::to_string(target_.port);
    with_stream([&](auto& ws) {
      ws.async_handshake(host, target_.path, [self = shared_from_this()](beast::error_code ec) {
        if (ec) return self->end("handshake: " + ec.message());
        // From here on the connection lives as long as the backend keeps it; the
        // websocket's own keep-alive pings find a dead peer.
        self->tcp().expires_never();
        self->with_stream(
            [](auto& s) { s.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client)); });
        self->read();
      });
    });
  }

  void read() {
    with_stream([&](auto& ws) {
      ws.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->end(ec.message());
        if (!self->closed_) {
          auto data = beast::buffers_to_string(self->buffer_.data());
          bool text = false;
          self->with_stream([&](auto& s) { text = s.got_text(); });
          if (text) self->on_message_(std::move(data));
        }
        self->buffer_.consume(self->buffer_.size());
        self->read();
      });
    });
  }

  void end(std::string why) {
    if (closed_.exchange(true)) return;
    if (on_end_) on_end_(std::move(why));
  }

  asio::io_context& ioc_;
  http_target target_;
  std::chrono::milliseconds timeout_;
  std::function<void(std::string)> on_message_;
  std::function<void(std::string)> on_end_;
  asio::ip::tcp::resolver resolver_;
  std::optional<plain> plain_;
  std::optional<secure> secure_;
  beast::flat_buffer buffer_;
  std::atomic<bool> closed_{false};
};

} // namespace

std::shared_ptr<ws_listener> ws_listen(asio::io_context& ioc, http_target target, std::chrono::milliseconds timeout,
                                       std::function<void(std::string)> on_message,
                                       std::function<void(std::string)> on_end) {
  auto l = std::make_shared<listener>(ioc, std::move(target), timeout, std::move(on_message), std::move(on_end));
  asio::post(ioc, [l] { l->start(); });
  return l;
}

} // namespace lowart::net
