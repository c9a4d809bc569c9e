-- Two user types by weight (3 browsers for each buyer) and tags for -T / -E:
--   cicada -f examples/lua/weighted_tags.lua --headless -u 20 -t 20s -T browse
--   cicada -f examples/lua/weighted_tags.lua --show-task-ratio
local function item(self)
  self.client:get("/items/" .. self.rng:int(1, 100), { name = "/items/[id]" })
end

local Browser = cicada.user { name = "Browser", weight = 3, wait_time = cicada.between(0.1, 0.5) }
Browser:task(function(self) self.client:get("/") end, { name = "home", tags = { "browse" } })
Browser:task(4, item, { name = "item", tags = { "browse" } })
Browser:task(function(self) self.client:get("/slow?ms=200", { name = "/slow" }) end, { name = "slow", tags = { "slow" } })

local Buyer = cicada.user { name = "Buyer", weight = 1, wait_time = cicada.constant(0.5) }
Buyer:task(2, item, { name = "item", tags = { "browse" } })
Buyer:task(function(self)
  self.client:post("/cart", { json = { item = self.rng:int(1, 100), quantity = 1 } })
end, { name = "add_to_cart", tags = { "buy" } })
