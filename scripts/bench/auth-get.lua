-- wrk script: GET with the API key from CRM_KEY.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CRM_KEY")
