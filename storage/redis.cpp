#include "storage/redis.hpp"

#include "core/log.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cctype>
#include <hiredis/hiredis.h>

namespace lowart::storage {

namespace asio = boost::asio;

namespace {

redis_reply convert(const redisReply* r) {
  redis_reply out;
  switch (r->type) {
  case REDIS_REPLY_STRING:
    out.type = redis_reply::string;
    out.text.assign(r->str, r->len);
    break;
  case REDIS_REPLY_STATUS:
    out.type = redis_reply::status;
    out.text.assign(r->str, r->len);
    break;
  case REDIS_REPLY_ERROR:
    out.type = redis_reply::error;
    out.text.assign(r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    out.type = redis_reply::integer;
    out.number = r->integer;
    break;
  case REDIS_REPLY_ARRAY:
    out.type = redis_reply::array;
    out.items.reserve(r->elements);
    for (std::size_t i = 0; i < r->elements; ++i)
      out.items.push_back(convert(r->element[i]));
    break;
  default:
    out.type = redis_reply::nil;
  }
  return out;
}

} // namespace

namespace {
/// %XX escapes of a URL's user or password.
std::string percent_decoded(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}
} // namespace

bool parse_redis_url(const std::string& url, redis_endpoint& out) {
  constexpr std::string_view scheme = "redis://";
  if (!url.starts_with(scheme)) return false;
  std::string_view rest = std::string_view(url).substr(scheme.size());
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    auto cred = rest.substr(0, at);
    if (auto colon = cred.find(':'); colon != std::string_view::npos) {
      out.user = percent_decoded(cred.substr(0, colon));
      out.password = percent_decoded(cred.substr(colon + 1));
    } else {
      out.password = percent_decoded(cred); // redis://secret@host: a password alone
    }
    rest = rest.substr(at + 1);
  }
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    auto db = rest.substr(slash + 1);
    if (!db.empty()) out.db = std::atoi(std::string(db).c_str());
    rest = rest.substr(0, slash);
  }
  if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    out.host = std::string(rest.substr(0, colon));
    out.port = std::string(rest.substr(colon + 1));
  } else {
    out.host = std::string(rest);
  }
  return !out.host.empty() && !out.port.empty();
}

void append_command(std::string& out, const std::vector<std::string>& args) {
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (const auto& a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out += a;
    out += "\r\n";
  }
}

redis_connection::redis_connection(asio::io_context& ioc, redis_endpoint endpoint, std::chrono::milliseconds timeout,
                                   std::string name)
    : ioc_(ioc), endpoint_(std::move(endpoint)), timeout_(timeout), name_(std::move(name)), resolver_(ioc),
      socket_(ioc), retry_timer_(ioc), watchdog_(ioc) {}

redis_connection::~redis_connection() {
  if (reader_) redisReaderFree(reader_);
}

std::string redis_connection::problem() const {
  std::lock_guard guard{problem_mutex_};
  return problem_;
}

void redis_connection::set_problem(std::string text) {
  std::lock_guard guard{problem_mutex_};
  problem_ = std::move(text);
}

void redis_connection::start() {
  asio::post(ioc_, [self = shared_from_this()] { self->connect(); });
}

void redis_connection::stop() {
  asio::post(ioc_, [self = shared_from_this()] {
    self->stopped_ = true;
    self->fail("stopped");
    self->retry_timer_.cancel();
    self->watchdog_.cancel();
  });
}

void redis_connection::connect() {
  if (stopped_) return;
  auto gen = ++generation_;
  // A host that drops packets would hold a connect for minutes: bounded like a command.
  retry_timer_.expires_after(std::max(timeout_ * 4, std::chrono::milliseconds(1000)));
  retry_timer_.async_wait([self = shared_from_this(), gen](boost::system::error_code ec) {
    if (ec || gen != self->generation_ || self->up_) return;
    self->fail("cannot connect to " + self->endpoint_.host + ":" + self->endpoint_.port + ": timed out");
  });
  resolver_.async_resolve(
      endpoint_.host, endpoint_.port,
      [self = shared_from_this(), gen](boost::system::error_code ec, asio::ip::tcp::resolver::results_type results) {
        if (gen != self->generation_ || self->stopped_) return;
        if (ec) return self->fail("cannot resolve " + self->endpoint_.host + ": " + ec.message());
        asio::async_connect(self->socket_, results,
                            [self, gen](boost::system::error_code ec2, const asio::ip::tcp::endpoint&) {
                              if (gen != self->generation_ || self->stopped_) return;
                              if (ec2)
                                return self->fail("cannot connect to " + self->endpoint_.host + ":" +
                                                  self->endpoint_.port + ": " + ec2.message());
                              boost::system::error_code ignored;
                              self->retry_timer_.cancel();
                              self->socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
                              if (self->reader_) redisReaderFree(self->reader_);
                              self->reader_ = redisReaderCreate();
                              self->up_ = true;
                              self->set_problem({});
                              self->read_more();
                              // Authentication and database first: everything else is queued after.
                              // A refusal fails the connection (and so shows in /readyz) rather
                              // than leaving it "up" with every command refused.
                              auto checked = [self, gen](const redis_reply* r) {
                                if (r && r->type == redis_reply::error && gen == self->generation_)
                                  self->fail("redis refused the connection set-up: " + r->text);
                              };
                              if (!self->endpoint_.password.empty()) {
                                if (self->endpoint_.user.empty())
                                  self->send({"AUTH", self->endpoint_.password}, checked);
                                else
                                  self->send({"AUTH", self->endpoint_.user, self->endpoint_.password}, checked);
                              }
                              if (self->endpoint_.db)
                                self->send({"SELECT", std::to_string(self->endpoint_.db)}, checked);
                              if (self->backoff_ > std::chrono::milliseconds(100) || self->generation_ > 1)
                                log::info("redis connected", {{"connection", self->name_}});
                              self->backoff_ = std::chrono::milliseconds(100);
                              if (self->on_up) self->on_up(*self);
                            });
      });
}

void redis_connection::fail(const std::string& why) {
  bool was_up = up_;
  up_ = false;
  ++generation_;
  boost::system::error_code ignored;
  socket_.close(ignored);
  out_.clear();
  writing_.clear();
  auto failed = std::move(pending_);
  pending_.clear();
  for (auto& p : failed)
    if (p.done) p.done(nullptr);
  if (stopped_) {
    set_problem("stopped");
    return;
  }
  set_problem(why);
  if (was_up) {
    log::error("redis connection lost", {{"connection", name_}, {"error", why}});
    if (on_down) on_down(why);
  }
  retry_timer_.expires_after(backoff_);
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(5000));
  retry_timer_.async_wait([self = shared_from_this(), gen = generation_](boost::system::error_code ec) {
    if (ec || gen != self->generation_) return;
    self->connect();
  });
}

void redis_connection::send(const std::vector<std::string>& args, handler done) {
  if (!up_) {
    if (done) asio::post(ioc_, [d = std::move(done)] { d(nullptr); });
    return;
  }
  append_command(out_, args);
  pending_.push_back({std::move(done), std::chrono::steady_clock::now()});
  write_more();
  arm_watchdog();
}

void redis_connection::write_more() {
  if (!writing_.empty() || out_.empty() || !up_) return;
  writing_.swap(out_);
  asio::async_write(socket_, asio::buffer(writing_),
                    [self = shared_from_this(), gen = generation_](boost::system::error_code ec, std::size_t) {
                      if (gen != self->generation_) return;
                      if (ec) return self->fail("write: " + ec.message());
                      self->writing_.clear();
                      self->write_more();
                    });
}

void redis_connection::read_more() {
  socket_.async_read_some(
      asio::buffer(in_), [self = shared_from_this(), gen = generation_](boost::system::error_code ec, std::size_t n) {
        if (gen != self->generation_) return;
        if (ec) return self->fail(ec == asio::error::eof ? "connection closed by redis" : "read: " + ec.message());
        if (redisReaderFeed(self->reader_, self->in_.data(), n) != REDIS_OK) return self->fail("bad reply from redis");
        for (;;) {
          void* raw = nullptr;
          if (redisReaderGetReply(self->reader_, &raw) != REDIS_OK) return self->fail("bad reply from redis");
          if (!raw) break;
          auto reply = convert(static_cast<redisReply*>(raw));
          freeReplyObject(raw);
          bool push = self->subscriber && reply.type == redis_reply::array && !reply.items.empty() &&
                      (reply.items[0].text == "message" || reply.items[0].text == "pmessage");
          if (push) {
            if (self->on_push) self->on_push(reply);
            continue;
          }
          if (self->pending_.empty()) continue; // (a subscribe confirmation we did not wait for)
          auto done = std::move(self->pending_.front().done);
          self->pending_.pop_front();
          if (done) done(&reply);
          if (gen != self->generation_) return; // a handler failed the connection
          // The script cache was flushed (SCRIPT FLUSH, a failover): reconnecting loads
          // the scripts again before anything else.
          if (reply.type == redis_reply::error && reply.text.starts_with("NOSCRIPT"))
            return self->fail("redis lost lowart's scripts (NOSCRIPT); reconnecting");
        }
        self->read_more();
      });
}

void redis_connection::arm_watchdog() {
  if (watchdog_armed_) return;
  watchdog_armed_ = true;
  watchdog_.expires_after(std::max(timeout_ / 4, std::chrono::milliseconds(5)));
  watchdog_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->watchdog_armed_ = false;
    if (ec || self->stopped_) return;
    if (self->pending_.empty()) return;
    // A subscriber's SUBSCRIBE confirmations come back as pushes too; its pending list
    // holds only commands, which must still be answered in time.
    if (std::chrono::steady_clock::now() - self->pending_.front().sent > self->timeout_)
      return self->fail("no answer from redis within " + std::to_string(self->timeout_.count()) + " ms");
    self->arm_watchdog();
  });
}

} // namespace lowart::storage
