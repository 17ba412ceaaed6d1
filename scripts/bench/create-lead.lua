-- wrk script: POST /api/v1/leads with a unique email per request (dedup would
-- otherwise answer 409). The API key comes from the CRM_KEY environment variable.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    thread_id = tid
end

function request()
    counter = counter + 1
    local body = string.format(
        '{"name":"Bench Lead","email":"b%d-%d-%d@example.com","message":"hello from wrk"}',
        os.time(), thread_id, counter)
    return wrk.format("POST", "/api/v1/leads", {
        ["Authorization"] = "Bearer " .. os.getenv("CRM_KEY"),
        ["Content-Type"] = "application/json",
    }, body)
end
