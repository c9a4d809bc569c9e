-- Custom messages (examples/messages.rs in Lua, as Locust's custom_messages.py): when the test starts, the master
-- splits a list of test accounts across its workers with a message to each; a worker's handler hands its share to
-- the users and answers with an acknowledgement, which the master's handler logs. In a single process the
-- messages are handled by the process that sends them, so the same test runs unchanged.
--   cicada -f examples/lua/messages.lua --headless -u 4 -r 4 -t 10s
--   cicada -f examples/lua/messages.lua --headless -u 4 -r 4 -t 10s --processes 2
--
-- A handler runs in the first of the process's Lua states, and users live in all of them, so a global set by a
-- handler is not seen by every user. The handler pushes the accounts to a `pushed` source instead, which every
-- user reads: across the cluster, every account is viewed exactly once. (On a worker a pushed item goes to the
-- master, which hands it out again, so an account may be viewed by a user of another worker than the one it was
-- sent to.) With MESSAGES_ACK_FILE set, the master (or the single process) also appends one line per
-- acknowledgement to that file (`<source> <count>`).

local ACCOUNTS = 12

cicada.data_source("share", { pushed = true, when_exhausted = "wait" })

-- Master (or single process): split the accounts across the workers, one message each.
cicada.on("test_start", function()
  if cicada.runner.mode() == "worker" then return end
  local accounts = {}
  for i = 1, ACCOUNTS do accounts[i] = i end
  local workers = cicada.workers()
  if #workers == 0 then
    -- A single process: the message comes back to this process's own handler.
    cicada.send_message("accounts", accounts)
    return
  end
  local chunk = math.ceil(#accounts / #workers)
  for index, worker in ipairs(workers) do
    local share = table.move(accounts, (index - 1) * chunk + 1, math.min(index * chunk, #accounts), 1, {})
    if #share > 0 then cicada.send_message_to(worker, "accounts", share) end
  end
end)

-- Worker (or single process): hand the share to the users, and say thanks.
cicada.on_message("accounts", function(accounts, source)
  for _, account in ipairs(accounts) do cicada.push_item("share", account) end
  cicada.send_message_to(source, "ack", { count = #accounts })
end)

-- Master (or single process): log each acknowledgement.
cicada.on_message("ack", function(ack, source)
  print(source .. " took " .. ack.count .. " accounts")
  local path = os.getenv("MESSAGES_ACK_FILE")
  if path then
    local file = assert(io.open(path, "a"))
    file:write(source, " ", ack.count, "\n")
    file:close()
  end
end)

local Member = cicada.user { name = "Member", wait_time = cicada.between(0.1, 0.2) }
Member:task(function(self)
  -- Waits for an account (a stopped user stops waiting).
  local account = self:next_item("share")
  self.client:get("/items/" .. account, { name = "/items/[account]" })
end, { name = "view_account" })
