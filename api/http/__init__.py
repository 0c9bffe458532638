"""HTTP plumbing around the endpoints: the ASGI routes and middleware stack, limits, logs, metrics, the request
guard, receipt deadlines, JSON body bounds and the OpenAPI document. No endpoint flow lives here (api/ holds those).
"""
