// Package tokens counts the tokens of context entries with a pinned
// tokenizer (github.com/tiktoken-go/tokenizer, whose vocabularies ship
// inside the Go module: nothing is downloaded at run time).
//
// A count is computed once, when an entry is appended, and stored with the
// entry, so replicas and standbys never count again with another version.
// The encoding is a context's choice (Context.token_encoding); "" means
// Default, forever (contexts created before counts existed).
//
//	n := tokens.Text(tokens.Default, "hello world") // 2
package tokens
