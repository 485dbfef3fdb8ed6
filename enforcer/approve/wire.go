package approve

// WireRequest is a request in the stable webhook JSON schema (the
// "request" object documented in the package doc). Other transports that
// publish requests (the fleet's key-value bucket) use it so that they say
// exactly what the webhook says and no more.
type WireRequest = jsonRequest

// ToWire returns r in the webhook JSON schema. The statement is cut to
// MaxWebhookStatement bytes.
func ToWire(r Request) WireRequest {
	return jsonMessage(Event{Kind: EventRequest, Request: r}).Request
}
