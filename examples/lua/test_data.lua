-- Test data (examples/test_data.rs in Lua): items handed out in order, each once across the whole cluster, and a
-- CSV file each process cycles through on its own.
--   cicada -f examples/lua/test_data.lua --headless -u 10 -r 10 -t 20s
--   cicada -f examples/lua/test_data.lua --headless -u 10 -r 10 -t 20s --processes 2    # a master and 2 workers
--
-- - Buyer takes the next product of examples/data/products.jsonl (200 lines) and views it: every product is viewed
--   exactly once, by one user of one worker; when none is left the buyer stops (when_exhausted = "stop_user").
-- - Browser walks through categories that start over when the last was seen (when_exhausted = "cycle").
-- - Member logs in with an account of examples/data/accounts.csv, read by each process (cicada.csv_cycle); a
--   CSV row is a table of strings by column name.
-- File paths are relative to this file. Sources are read by the master only; a csv_cycle file by every process.

cicada.data_source("products", { json_lines = "../data/products.jsonl", batch_size = 16 })
cicada.data_source("categories", {
  iter = { "books", "music", "games", "garden", "kitchen" },
  when_exhausted = "cycle",
})
-- Read (and checked whole) when the test loads: a malformed row is an error naming its line.
local accounts = cicada.csv_cycle("../data/accounts.csv")

local Buyer = cicada.user { name = "Buyer", weight = 2, wait_time = cicada.between(0.05, 0.1) }
Buyer:task(function(self)
  -- No product left: this buyer stops here.
  local product = self:next_item("products")
  self.client:get("/items/" .. product.id, { name = "/items/[id]", query = { category = product.category } })
end, { name = "buy" })

local Browser = cicada.user { name = "Browser", wait_time = cicada.between(0.5, 1.0) }
Browser:task(function(self)
  self.client:get("/items", { query = { category = self:next_item("categories") } })
end, { name = "browse" })

local Member = cicada.user { name = "Member", wait_time = cicada.between(0.5, 1.0) }
function Member:on_start()
  self.account = accounts:next()
  self.client:post("/login", { form = { username = self.account.username, password = self.account.password } })
end
Member:task(function(self)
  local name = self.account.plan == "gold" and "/account (gold)" or "/account"
  self.client:get("/account", { name = name })
end, { name = "view_account" })
