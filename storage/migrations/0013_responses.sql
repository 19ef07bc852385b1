-- Stored responses of the Responses API (POST /v1/responses with store): the Response
-- object and the request's input items, owned by the key that made it. previous_id links
-- a conversation; output items are kept by id too, for item_reference inputs. Rows older
-- than [storage] responses_ttl_s are deleted by the persistence actor.
CREATE TABLE responses (
  id           TEXT PRIMARY KEY,
  key_id       TEXT NOT NULL,
  previous_id  TEXT,
  created_ms   INTEGER NOT NULL,
  input        TEXT NOT NULL,   -- JSON array of input items (ids assigned)
  body         TEXT NOT NULL    -- the Response object (JSON)
);
CREATE INDEX responses_by_created ON responses(created_ms);
CREATE TABLE response_items (
  id           TEXT PRIMARY KEY,
  response_id  TEXT NOT NULL,
  key_id       TEXT NOT NULL,
  body         TEXT NOT NULL    -- one output item (JSON)
);
CREATE INDEX response_items_by_response ON response_items(response_id);
