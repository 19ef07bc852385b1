#pragma once
// Stored responses of the OpenAI Responses API (POST /v1/responses with "store"): each
// response with its input items, owned by the key that made it; output items are kept
// by id too, for item_reference inputs. Owned by the persistence actor, like jobs_store.

#include <string>
#include <utility>

namespace lowart::storage {
class database;
}

namespace lowart::actors {

class responses_store {
public:
  explicit responses_store(storage::database& db);

  /// Operations (status, JSON answer); `key` is the caller's key id:
  ///   save     (a: record {"id","key_id","previous_response_id","created_ms","input","response"}) -> 200 {}
  ///   get      (a: id, b: key) -> the Response object | 404
  ///   input    (a: id, b: key) -> the response's own input items (array) | 404
  ///   delete   (a: id, b: key) -> 200 {"id","object":"response","deleted":true} | 404
  ///   resolve  (a: {"previous_response_id","references":[ids]}, b: key)
  ///            -> {"context":[items of the conversation so far, oldest first],"items":{id: item}}
  ///             | 404 {"id","param"} naming what this key has no response or item for
  ///   expire   (a: cutoff unix ms) -> {"deleted":N}: responses created before it, and their items
  std::pair<int, std::string> op(const std::string& name, const std::string& a, const std::string& b);

private:
  storage::database& db_;
};

} // namespace lowart::actors
