package signer

// Len returns how many serials c lists.
func (c *CRLFile) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.listed)
}
