-- A sequential task set nested in a user: open an item, add it to the cart, pay, then interrupt back to browsing.
--   cicada -f examples/lua/sequential.lua --headless -u 10 -t 20s
local Shopper = cicada.user { name = "Shopper", wait_time = cicada.between(0.2, 0.6) }

local checkout = cicada.sequential { name = "checkout", wait_time = cicada.constant(0.1) }
checkout:task(function(self) self.client:get("/items/42", { name = "/items/[id]" }) end, { name = "open_item" })
checkout:task(function(self) self.client:post("/cart", { json = { item = 42 } }) end, { name = "add_to_cart" })
checkout:task(function(self) self.client:get("/slow?ms=100", { name = "/pay" }) end, { name = "pay" })
checkout:task(function(self) self:interrupt(true) end, { name = "done" })

Shopper:task(3, function(self) self.client:get("/items") end, { name = "browse" })
Shopper:task(checkout)
