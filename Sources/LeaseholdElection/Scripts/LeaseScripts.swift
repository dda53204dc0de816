import RedisClient

/// The Lua scripts that make every lease transition atomic on the Redis server.
///
/// All time comes from Redis `TIME`, never from a member's wall clock. Numbers that may
/// exceed 2^31 are formatted with `%d` because Lua's default number printing loses digits.
/// Scripts touch only keys passed in `KEYS`, except the member hashes of pruned members.
package enum LeaseScripts {
    /// The namespace epoch, shared by `acquire` and `renew`: `epoch_check(key, seen,
    /// quarantine_ms, member, now_ms, now_us)` returns the epoch id and the end of the
    /// quarantine (Redis ms, 0 for none).
    ///
    /// The epoch hash is written once per namespace. A member that saw an epoch and finds none
    /// (Redis restarted without its data, or was flushed) writes a new one with a quarantine of
    /// its longest lease TTL: until then no lease of the namespace is granted, because a
    /// leader of the lost data may still count itself valid for up to its TTL. A member that
    /// finds a different epoch than the one it saw (another member, new since the loss, wrote
    /// it without a quarantine) extends the quarantine to the epoch's creation plus its own
    /// longest TTL. A member that never saw an epoch (the namespace's first start) writes one
    /// without a quarantine.
    static let epochCheck = #"""
        local function epoch_check(key, seen, qms, member, now_ms, now_us)
          local ep = redis.call('HMGET', key, 'id', 'created_at', 'quarantine_until')
          local id, created, q = ep[1], tonumber(ep[2] or '0') or 0, tonumber(ep[3] or '0') or 0
          if not id then
            id = string.format('%d', now_us)
            if seen ~= '' then q = now_ms + qms else q = 0 end
            redis.call('HSET', key, 'id', id, 'created_at', string.format('%d', now_ms),
              'quarantine_until', string.format('%d', q), 'created_by', member, 'previous', seen)
          elseif seen ~= '' and seen ~= id and created + qms > q then
            q = created + qms
            redis.call('HSET', key, 'quarantine_until', string.format('%d', q))
          end
          return id, q
        end
        """#

    /// Acquires (or idempotently re-acquires) a batch of leases for one owner.
    ///
    /// KEYS: jobs set, epoch hash, then per job: lease, fence, state, events.
    /// ARGV: owner, member, events maxlen, job count, the epoch this member saw last ('' if
    /// none), quarantine ms (its longest lease TTL), then per job: name, ttl ms, gap hint ms,
    /// min free ms ('' for none: a released lease is taken only once released that long ago).
    /// Reply: `{now_ms, epoch id, quarantine end ms, {status, ...} per job}` where status 1 = newly acquired
    /// (`{1, token, event}`), 2 = already held by this owner (`{2, token}`, TTL reset),
    /// 0 = held by someone else (`{0, holder value, pttl ms}`), or released too recently
    /// for this member (`{0, '', ms until it may take it}`), 3 = this job's step failed
    /// (`{3, "key: error"}`, e.g. a key of the wrong type) and left no lease in our name.
    /// While the namespace is quarantined after a data loss a free job answers
    /// `{0, '', ms until the quarantine ends}` and nothing is written.
    ///
    /// The token is `max(fence + 1, redis_time_µs)`: if the fence key is lost (restart
    /// without persistence) the next token still exceeds every earlier one, as long as the
    /// server clock does not step back.
    package static let acquire = RedisScript(
        #"""
        local owner, member, maxlen, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
        local t = redis.call('TIME')
        local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local now_ms = math.floor(now_us / 1000)
        local now_s = string.format('%d', now_ms)
        \#(epochCheck)
        local epoch, q_until = epoch_check(KEYS[2], ARGV[5], tonumber(ARGV[6]), member, now_ms, now_us)
        local out = {now_s, epoch, string.format('%d', q_until)}
        for i = 1, n do
          local k = 2 + (i - 1) * 4
          local lease, fence, state, events = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
          local a = 6 + (i - 1) * 4
          local job, ttl, gap_hint, min_free = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
          -- Each job's step fails on its own: Redis keeps a script's earlier writes when a
          -- command raises (a key of the wrong type, written by another tool), so an error
          -- must neither abort the batch nor leave a lease in our name that the reply denies.
          local at, written = lease, nil
          local ok, entry = pcall(function()
            local v = redis.call('GET', lease)
            if not v and now_ms < q_until then return {0, '', q_until - now_ms} end
            local prev, wait = nil, 0
            if not v then
              at = state
              prev = redis.call('HMGET', state, 'holder', 'released_at', 'release_reason', 'down_since')
              if min_free ~= '' and (not prev[1] or prev[1] == '') and prev[2] then
                wait = tonumber(min_free) - (now_ms - tonumber(prev[2]))
              end
            end
            if not v and wait > 0 then
              return {0, '', wait}
            elseif not v then
              at = fence
              local tok = (tonumber(redis.call('GET', fence) or '0') or 0) + 1
              if now_us > tok then tok = now_us end
              local toks = string.format('%d', tok)
              redis.call('SET', fence, toks)
              at = lease
              redis.call('SET', lease, owner .. ':' .. toks, 'PX', ttl)
              written = owner .. ':' .. toks
              local kind, gap, prev_holder = 'acquired', '', ''
              if prev[1] and prev[1] ~= '' then
                kind, gap, prev_holder = 'expired_takeover', gap_hint, prev[1]
              elseif prev[3] == 'crash_release' then
                -- Released by the dead holder's guardian: the gap counts from its death.
                kind = 'crash_release'
                gap = string.format('%d', now_ms - tonumber(prev[4] or prev[2] or now_s))
              elseif prev[2] then
                gap = string.format('%d', now_ms - tonumber(prev[2]))
              end
              at = events
              redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'member', member,
                'owner', owner, 'token', toks, 'at', now_s, 'gap_ms', gap, 'previous', prev_holder)
              at = state
              redis.call('HSET', state, 'holder', owner .. ':' .. toks, 'holder_member', member,
                'acquired_at', now_s, 'lease_ms', ttl, 'last_owner', owner, 'last_token', toks, 'release_reason', '')
              at = KEYS[1]
              redis.call('SADD', KEYS[1], job)
              return {1, toks, kind, gap}
            elseif string.sub(v, 1, #owner + 1) == owner .. ':' then
              redis.call('PEXPIRE', lease, ttl)
              return {2, string.sub(v, #owner + 2)}
            else
              return {0, v, redis.call('PTTL', lease)}
            end
          end)
          if ok then
            out[#out + 1] = entry
          else
            -- Undo our own lease write, so the job is exactly as free as the reply says.
            if written and redis.call('GET', lease) == written then redis.call('DEL', lease) end
            local message = type(entry) == 'table' and entry.err or tostring(entry)
            out[#out + 1] = {3, at .. ': ' .. message}
          end
        end
        return out
        """#)

    /// Renews every lease one member holds, refreshes its heartbeat and its advertised
    /// catalog, and returns the live members: one round trip per member per tick however many
    /// jobs it leads.
    ///
    /// KEYS: members zset, member hash, handoff-request set, catalog set (of this member's
    /// digest), epoch hash, then per job: lease, events.
    /// ARGV: owner, member, heartbeat ttl ms, incarnation, previous tick ms (0 if none),
    /// member key prefix, events maxlen, job count, catalog digest, number of jobs carried,
    /// number of job names to publish (0 on most ticks), the epoch this member saw last ('' if
    /// none), quarantine ms, per job: name, token, ttl ms, then the job names to publish, then
    /// metadata field/value pairs for the member hash.
    /// Reply: `{now_ms, {renewed 1|0 per job}, {name, expiry_ms, weight, incarnation, catalog,
    /// ...live members}, duplicate incarnation or '', {job names an operator asked to hand
    /// over}, catalog set present 1|0, epoch id, quarantine end ms}`.
    ///
    /// The catalog set lives 24 h past the last tick of a member advertising it, like a dead
    /// member's hash: kept alive here at the cost of one PEXPIRE, never written per tick.
    package static let renew = RedisScript(
        #"""
        local owner, member, hb, inc = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
        local prev_tick, prefix, maxlen, n = tonumber(ARGV[5]), ARGV[6], ARGV[7], tonumber(ARGV[8])
        local digest, carried, publish = ARGV[9], ARGV[10], tonumber(ARGV[11])
        local t = redis.call('TIME')
        local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local now_ms = math.floor(now_us / 1000)
        local now_s = string.format('%d', now_ms)
        \#(epochCheck)
        local epoch, q_until = epoch_check(KEYS[5], ARGV[12], tonumber(ARGV[13]), member, now_ms, now_us)
        local renewed = {}
        for i = 1, n do
          local k = 5 + (i - 1) * 2
          local a = 13 + (i - 1) * 3
          local job, tok, ttl = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
          -- One job's key of the wrong type must not fail the renewal of every other lease.
          local ok, r = pcall(function()
            local v = redis.call('GET', KEYS[k + 1])
            if v == owner .. ':' .. tok then
              redis.call('PEXPIRE', KEYS[k + 1], ttl)
              return 1
            end
            redis.pcall('XADD', KEYS[k + 2], 'MAXLEN', '~', maxlen, '*', 'type', 'lost', 'member', member,
              'owner', owner, 'token', tok, 'at', now_s, 'holder', v or '')
            return 0
          end)
          renewed[i] = ok and r or 0
        end
        local names_at = 14 + n * 3
        if publish > 0 then
          -- The whole set at once, in chunks (Lua's unpack has a stack limit).
          redis.pcall('DEL', KEYS[4])
          local first = names_at
          local last = names_at + publish - 1
          while first <= last do
            local upto = math.min(first + 999, last)
            redis.pcall('SADD', KEYS[4], unpack(ARGV, first, upto))
            first = upto + 1
          end
        end
        local present = redis.pcall('PEXPIRE', KEYS[4], 86400000)
        if type(present) ~= 'number' then present = 0 end
        local duplicate = ''
        local seen = redis.call('HMGET', KEYS[2], 'incarnation', 'tick_at')
        if prev_tick > 0 and seen[1] and seen[1] ~= inc and tonumber(seen[2] or '0') >= prev_tick then
          duplicate = seen[1]
        end
        redis.call('ZADD', KEYS[1], now_ms + hb, member)
        local meta = {'incarnation', inc, 'tick_at', now_s, 'heartbeat_ms', ARGV[3], 'left_at', ''}
        for j = names_at + publish, #ARGV do meta[#meta + 1] = ARGV[j] end
        meta[#meta + 1] = 'catalog'
        meta[#meta + 1] = digest
        meta[#meta + 1] = 'jobs'
        meta[#meta + 1] = carried
        redis.call('HSET', KEYS[2], unpack(meta))
        local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms - 86400000, 'LIMIT', 0, 16)
        for _, d in ipairs(dead) do
          redis.call('ZREM', KEYS[1], d)
          redis.call('DEL', prefix .. d)
        end
        local live = {}
        local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now_ms, '+inf', 'WITHSCORES')
        for j = 1, #entries, 2 do
          live[#live + 1] = entries[j]
          live[#live + 1] = entries[j + 1]
          local info = redis.call('HMGET', prefix .. entries[j], 'weight', 'incarnation', 'catalog')
          live[#live + 1] = info[1] or '1'
          live[#live + 1] = info[2] or ''
          live[#live + 1] = info[3] or ''
        end
        local requests = redis.call('SMEMBERS', KEYS[3])
        if #requests > 0 then redis.call('DEL', KEYS[3]) end
        return {now_s, renewed, live, duplicate, requests, present, epoch, string.format('%d', q_until)}
        """#)

    /// Releases a batch of leases by value and tells standbys at once through pub/sub.
    ///
    /// KEYS: per job: lease, state, events.
    /// ARGV: owner, member, reason (`released` | `handed_off` | `crash_release`), channel,
    /// events maxlen, job count, leaving (`1` when the member is shutting down), then per job:
    /// name, token ('' releases whatever lease this owner holds, used after an acquire whose
    /// outcome is unknown), then optionally how long the holder has been down (ms; a crash
    /// release), recorded as `down_since` so the next acquire reports the whole gap.
    /// The message published is the job name, followed by ` <member>` when the member is
    /// leaving, so standbys stop counting it as a live preferred member at once. The reason
    /// is kept in the state hash (`release_reason`) for the next acquire's event.
    /// Reply: `{1|0 per job}`.
    package static let release = RedisScript(
        #"""
        local owner, member, reason, channel, maxlen, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
        local suffix = ''
        if ARGV[7] == '1' then suffix = ' ' .. member end
        local t = redis.call('TIME')
        local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local now_s = string.format('%d', now_ms)
        local down = tonumber(ARGV[8 + n * 2] or '')
        local down_s = ''
        if down then down_s = string.format('%d', now_ms - down) end
        local out = {}
        for i = 1, n do
          local k = (i - 1) * 3
          local a = 7 + (i - 1) * 2
          local job, tok = ARGV[a + 1], ARGV[a + 2]
          -- A lease key of the wrong type is not ours to release (and must not fail the rest).
          local v = redis.pcall('GET', KEYS[k + 1])
          if type(v) ~= 'string' then v = nil end
          local match = false
          if v then
            if tok == '' then
              match = string.sub(v, 1, #owner + 1) == owner .. ':'
              tok = string.sub(v, #owner + 2)
            else
              match = v == owner .. ':' .. tok
            end
          end
          if match then
            redis.call('DEL', KEYS[k + 1])
            -- The lease is gone; bookkeeping on a key of the wrong type must not hide that.
            redis.pcall('HSET', KEYS[k + 2], 'holder', '', 'released_at', now_s, 'release_reason', reason,
              'down_since', down_s)
            redis.pcall('XADD', KEYS[k + 3], 'MAXLEN', '~', maxlen, '*', 'type', reason, 'member', member,
              'owner', owner, 'token', tok, 'at', now_s)
            redis.call('PUBLISH', channel, job .. suffix)
            out[i] = 1
          else
            out[i] = 0
          end
        end
        return out
        """#)

    /// Writes hash fields only while `owner:token` still holds the lease (a fenced write).
    ///
    /// KEYS: lease, target hash. ARGV: expected lease value, then field/value pairs.
    /// Reply: 1 if written, 0 if the lease is no longer held with that token.
    package static let fencedHashSet = RedisScript(
        #"""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        local fields = {}
        for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
        redis.call('HSET', KEYS[2], unpack(fields))
        return 1
        """#)

    /// Sets a string key only while `owner:token` still holds the lease (a fenced write).
    ///
    /// KEYS: lease, target. ARGV: expected lease value, value.
    /// Reply: 1 if written, 0 if the lease is no longer held with that token.
    package static let fencedSet = RedisScript(
        #"""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[2], ARGV[2])
        return 1
        """#)

    /// Starts a run: checks the token, the pause, the schedule and the slot (or the pending
    /// retry or manual trigger it consumes) in one atomic step, advances `next_run_at` and
    /// records the run, so a new leader continues the schedule without running a slot, a
    /// retry or a trigger twice, and a leader whose view of the state is stale never starts one.
    ///
    /// KEYS: lease, state, runs. ARGV: expected lease value, slot ms ('' for continuous jobs
    /// and manual runs; the failed run's slot for a retry), next slot ms ('' unless `trigger`
    /// is `schedule` on a scheduled job), member, token, runs maxlen, the schedule fingerprint
    /// the slot was computed with ('' for continuous jobs), trigger (`schedule` | `retry` |
    /// `manual`; '' is `schedule`), attempt ('' is 1).
    /// Reply: `{1, now_ms}` started; `{0}` not the holder; `{2, next_run_at}` the slot was
    /// already taken, the state's `schedule` is not that fingerprint, or the retry or trigger
    /// to consume is not pending (read the state again; `next_run_at` is '' when there is
    /// none); `{3}` the job is paused (`paused` = 1) and this is not a forced manual trigger.
    /// A scheduled slot that starts drops a pending retry: a retry never runs after the next slot.
    package static let beginRun = RedisScript(
        #"""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
        local slot, next_slot = ARGV[2], ARGV[3]
        local trigger, attempt = ARGV[8] or '', ARGV[9] or ''
        if trigger == '' then trigger = 'schedule' end
        if attempt == '' then attempt = '1' end
        local st = redis.call('HMGET', KEYS[2], 'paused', 'trigger_requested', 'trigger_forced', 'retry_attempt',
          'next_run_at', 'schedule')
        local current = st[5]
        if trigger == 'manual' then
          if not st[2] then return {2, current or ''} end
          if st[1] == '1' and st[3] ~= '1' then return {3} end
          redis.call('HDEL', KEYS[2], 'trigger_requested', 'trigger_by', 'trigger_forced')
        else
          if st[1] == '1' then return {3} end
          if trigger == 'retry' then
            if st[4] ~= attempt then return {2, current or ''} end
            redis.call('HDEL', KEYS[2], 'retry_attempt', 'retry_at', 'retry_slot')
          elseif slot ~= '' then
            if (st[6] or '') ~= (ARGV[7] or '') then return {2, current or ''} end
            if current and tonumber(current) > tonumber(slot) then return {2, current} end
            redis.call('HDEL', KEYS[2], 'retry_attempt', 'retry_at', 'retry_slot')
          end
        end
        local t = redis.call('TIME')
        local now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        if trigger == 'schedule' then
          if next_slot ~= '' then redis.call('HSET', KEYS[2], 'next_run_at', next_slot) end
          redis.call('HSET', KEYS[2], 'last_run_slot', slot)
        end
        redis.call('HSET', KEYS[2], 'last_run_started', now_s, 'last_run_token', ARGV[5],
          'last_run_member', ARGV[4], 'running', '1', 'last_run_attempt', attempt, 'last_run_trigger', trigger)
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'type', 'started', 'slot', slot, 'token', ARGV[5],
          'member', ARGV[4], 'started', now_s, 'attempt', attempt, 'trigger', trigger)
        return {1, now_s}
        """#)

    /// Skips slots that passed their starting deadline: moves `next_run_at` on and records
    /// each skipped slot as a `missed_slot` event, only while `owner:token` holds the lease and
    /// the state still carries the schedule and the slot the leader decided from. A pending
    /// retry goes too (it may not run after the slots it was meant to precede).
    ///
    /// KEYS: lease, state, events. ARGV: expected lease value, schedule fingerprint, the
    /// stored `next_run_at` decided from, new `next_run_at`, member, token, events maxlen,
    /// starting deadline ms, then the skipped slots (ms) to record.
    /// Reply: 1 skipped; 0 not the holder; 2 the state moved (read it again).
    package static let skipSlots = RedisScript(
        #"""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        local st = redis.call('HMGET', KEYS[2], 'schedule', 'next_run_at')
        if (st[1] or '') ~= ARGV[2] or st[2] ~= ARGV[3] then return 2 end
        local t = redis.call('TIME')
        local now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        redis.call('HSET', KEYS[2], 'next_run_at', ARGV[4])
        redis.call('HDEL', KEYS[2], 'retry_attempt', 'retry_at', 'retry_slot')
        for i = 9, #ARGV do
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', 'missed_slot', 'slot', ARGV[i],
            'member', ARGV[5], 'token', ARGV[6], 'at', now_s, 'deadline_ms', ARGV[8])
        end
        return 1
        """#)

    /// Replaces a scheduled job's schedule: writes `schedule`, `schedule_since` and
    /// `next_run_at` together, only while `owner:token` holds the lease and the state still
    /// carries the schedule the leader decided from, so two leaders' views never interleave.
    ///
    /// KEYS: lease, state. ARGV: expected lease value, expected current `schedule` ('' for
    /// none), new `schedule` fingerprint, new `schedule_since` (catalog load time, wall ms),
    /// new `next_run_at` ms.
    /// Reply: 1 written; 0 not the holder, or the stored schedule is not the expected one.
    package static let adoptSchedule = RedisScript(
        #"""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if (redis.call('HGET', KEYS[2], 'schedule') or '') ~= ARGV[2] then return 0 end
        redis.call('HSET', KEYS[2], 'schedule', ARGV[3], 'schedule_since', ARGV[4], 'next_run_at', ARGV[5])
        return 1
        """#)

    /// Records the end of a run: the `finished` entry in the runs stream always (the run did
    /// end, even if the lease moved on meanwhile); the state fields, `last_success_at` and a
    /// pending retry only while the token still holds the lease.
    ///
    /// KEYS: lease, state, runs (optional: without it nothing is streamed).
    /// ARGV: expected lease value, result, duration ms, slot ('' for none), token, member,
    /// started ms, attempt, trigger, runs maxlen, then the retry to schedule: attempt ('' for
    /// none), retry_at ms, the slot it retries ('' for a continuous or manual run).
    /// Reply: 1 recorded, 0 not the holder any more.
    package static let finishRun = RedisScript(
        #"""
        local t = redis.call('TIME')
        local now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        if KEYS[3] and ARGV[10] then
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'type', 'finished', 'slot', ARGV[4],
            'token', ARGV[5], 'member', ARGV[6], 'started', ARGV[7], 'finished', now_s, 'duration_ms', ARGV[3],
            'result', ARGV[2], 'attempt', ARGV[8], 'trigger', ARGV[9])
        end
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('HSET', KEYS[2], 'last_run_finished', now_s, 'last_result', ARGV[2],
          'last_duration_ms', ARGV[3], 'running', '0')
        if ARGV[2] == 'success' then redis.call('HSET', KEYS[2], 'last_success_at', now_s) end
        if ARGV[11] and ARGV[11] ~= '' then
          redis.call('HSET', KEYS[2], 'retry_attempt', ARGV[11], 'retry_at', ARGV[12], 'retry_slot', ARGV[13])
        end
        return 1
        """#)

    /// Marks a member as having left: its heartbeat expiry becomes now and `left_at` is
    /// recorded, unless another incarnation has taken the name over meanwhile.
    ///
    /// KEYS: members zset, member hash. ARGV: member, incarnation. Reply: 1 if marked.
    package static let leave = RedisScript(
        #"""
        if redis.call('HGET', KEYS[2], 'incarnation') ~= ARGV[2] then return 0 end
        local t = redis.call('TIME')
        local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
        redis.call('HSET', KEYS[2], 'left_at', string.format('%d', now_ms))
        return 1
        """#)

    /// Counts what is live in the key layout before the namespace hash tag (`{ns}:members`,
    /// `{ns}:{job}:lease`): members of an older Leasehold elect leaders there, unseen by this one.
    ///
    /// KEYS: the old members zset, then the old lease key of every job.
    /// Reply: `{live old members, old leases present}`.
    package static let legacyLayout = RedisScript(
        #"""
        local t = redis.call('TIME')
        local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local live = redis.call('ZCOUNT', KEYS[1], now_ms, '+inf')
        local leases = 0
        for i = 2, #KEYS do leases = leases + redis.call('EXISTS', KEYS[i]) end
        return {live, leases}
        """#)
}
