// Command bench measures drip side by side with the libraries its users
// would otherwise pick, and prints a report.
package main
