package pki

// Files returns the files a Source reads, for a library that reads TLS
// files itself (etcd's embedded server re-reads the certificate at every
// handshake, and the CA bundle at start).
func (s *Source) Files() Config {
	c := s.cfg
	c.Logger = nil
	return c
}
