-- The quickstart: visitors browse the demo shop's home page and item pages.
--   cicada -f examples/lua/quickstart.lua --headless -u 50 -r 10 -t 30s
-- (no -H: the built-in demo target is started on 127.0.0.1)
local Visitor = cicada.user { name = "Visitor", wait_time = cicada.between(0.5, 1.5) }

Visitor:task(function(self) self.client:get("/") end, { name = "index" })

Visitor:task(3, function(self)
  -- one stats row for every id
  self.client:get("/items/" .. self.rng:int(1, 10000), { name = "/items/[id]" })
end, { name = "view_item" })

Visitor:task(function(self) self.client:get("/slow?ms=50", { name = "/slow" }) end, { name = "slow_page" })
